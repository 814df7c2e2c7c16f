// Frees retired policies off the control thread. Freeing a CompiledPolicy returns its rte_lpm
// and rte_acl memory, which DPDK zeroes on free: a 64 MiB first-level LPM table alone took the
// control thread 0.27-0.5 s on a busy 2-core machine, a stall for handshakes after every reload.
// Retire callbacks (after the RCU grace period) hand the policy here; one low-priority thread
// deletes it. After close() (shutdown, before EAL cleanup) free() deletes on the caller's thread.
#pragma once

#include <sys/resource.h>
#include <unistd.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "controlplane/policy/compiled.h"

namespace sluice::cp {

class PolicyReaper {
 public:
  PolicyReaper() : thread_([this] { run(); }) {}
  ~PolicyReaper() { close(); }
  PolicyReaper(const PolicyReaper&) = delete;
  PolicyReaper& operator=(const PolicyReaper&) = delete;

  void free(const policy::CompiledPolicy* p) {
    {
      std::lock_guard<std::mutex> g(mu_);
      if (!closed_) {
        queue_.push_back(p);
        cv_.notify_one();
        return;
      }
    }
    delete p;
  }

  // Frees what is queued, stops the thread; later free() calls delete at once.
  void close() {
    {
      std::lock_guard<std::mutex> g(mu_);
      if (closed_) return;
      closed_ = true;
      cv_.notify_one();
    }
    thread_.join();
  }

 private:
  void run() {
    ::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), 10);  // below the control thread
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      cv_.wait(lock, [this] { return closed_ || !queue_.empty(); });
      while (!queue_.empty()) {
        const policy::CompiledPolicy* p = queue_.front();
        queue_.pop_front();
        lock.unlock();
        delete p;
        lock.lock();
      }
      if (closed_) return;
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<const policy::CompiledPolicy*> queue_;
  bool closed_ = false;
  std::thread thread_;  // last: starts once the rest is built
};

}  // namespace sluice::cp
