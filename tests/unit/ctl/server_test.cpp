#include "controlplane/ctl/server.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "controlplane/ctl/client.h"
#include "controlplane/ctl/protocol.h"
#include "tests/unit/ctl/test_util.h"

namespace sluice::ctl {
namespace {

using nlohmann::json;
using testing::closed_by_peer;
using testing::raw_connect;
using testing::read_line;
using testing::send_all;
using testing::ServerThread;
using testing::TempDir;

void add_test_handlers(Server& server) {
  server.add_handler("echo", [](const json& args) { return Reply::success(args); });
  server.add_handler("refuse", [](const json&) { return Reply::failure("no such peer 'x'"); });
  server.add_handler("throw", [](const json&) -> Reply { throw std::runtime_error("boom"); });
  server.add_handler("big", [](const json& args) {
    return Reply::success(json{{"blob", std::string(args.value("size", 0), 'z')}});
  });
}

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_.file("sluice.sock");
    add_test_handlers(server_);
    std::string err;
    ASSERT_TRUE(server_.listen(path_, &err)) << err;
  }
  void start() { thread_ = std::make_unique<ServerThread>(server_); }
  void TearDown() override { thread_.reset(); }

  TempDir dir_;
  std::string path_;
  Server server_;
  std::unique_ptr<ServerThread> thread_;
};

TEST_F(ServerTest, RequestResponse) {
  start();
  std::string err;
  const auto resp = request(path_, {{"command", "echo"}, {"args", {{"peer", "laptop-1"}}}, {"id", 7}},
                            &err);
  ASSERT_TRUE(resp) << err;
  EXPECT_EQ((*resp)["ok"], true);
  EXPECT_EQ((*resp)["result"], (json{{"peer", "laptop-1"}}));
  EXPECT_EQ((*resp)["id"], 7);
}

TEST_F(ServerTest, MissingArgsAreAnEmptyObject) {
  start();
  std::string err;
  const auto resp = request(path_, {{"command", "echo"}}, &err);
  ASSERT_TRUE(resp) << err;
  EXPECT_EQ((*resp)["result"], json::object());
}

TEST_F(ServerTest, FailureReply) {
  start();
  std::string err;
  const auto resp = request(path_, {{"command", "refuse"}, {"args", json::object()}}, &err);
  ASSERT_TRUE(resp) << err;
  EXPECT_EQ((*resp)["ok"], false);
  EXPECT_EQ((*resp)["error"], "no such peer 'x'");
  EXPECT_FALSE(resp->contains("result"));
}

TEST_F(ServerTest, UnknownCommand) {
  start();
  std::string err;
  const auto resp = request(path_, {{"command", "x"}, {"args", json::object()}}, &err);
  ASSERT_TRUE(resp) << err;
  EXPECT_EQ((*resp)["ok"], false);
  EXPECT_EQ((*resp)["error"], "unknown command 'x'");
}

TEST_F(ServerTest, HandlerExceptionBecomesFailure) {
  start();
  std::string err;
  const auto resp = request(path_, {{"command", "throw"}}, &err);
  ASSERT_TRUE(resp) << err;
  EXPECT_EQ((*resp)["ok"], false);
  EXPECT_EQ((*resp)["error"], "throw: boom");
}

TEST_F(ServerTest, MalformedJsonLineKeepsTheConnection) {
  start();
  const int fd = raw_connect(path_);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(send_all(fd, "{not json\n"));
  json resp = json::parse(read_line(fd));
  EXPECT_EQ(resp["ok"], false);
  EXPECT_EQ(resp["error"].get<std::string>().rfind("malformed request", 0), 0u) << resp.dump();

  for (const char* bad : {"[1, 2]", "{\"args\": {}}", "{\"command\": 3}",
                          "{\"command\": \"echo\", \"args\": [1]}", "\"status\"", "\xff\xfe"}) {
    ASSERT_TRUE(send_all(fd, std::string(bad) + "\n"));
    resp = json::parse(read_line(fd));
    EXPECT_EQ(resp["ok"], false) << bad;
    EXPECT_EQ(resp["error"].get<std::string>().rfind("malformed request", 0), 0u) << bad;
  }

  ASSERT_TRUE(send_all(fd, "{\"command\": \"echo\", \"args\": {\"a\": 1}}\r\n"));
  resp = json::parse(read_line(fd));
  EXPECT_EQ(resp["ok"], true);
  EXPECT_EQ(resp["result"]["a"], 1);
  ::close(fd);
}

TEST_F(ServerTest, OversizedRequestWithoutNewlineIsRefusedAndClosed) {
  start();
  const int fd = raw_connect(path_);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(send_all(fd, std::string(kMaxRequestBytes + 1000, 'x')));
  const json resp = json::parse(read_line(fd));
  EXPECT_EQ(resp["ok"], false);
  EXPECT_EQ(resp["error"], "request too large (limit 65536 bytes)");
  EXPECT_TRUE(closed_by_peer(fd));
  ::close(fd);
}

TEST_F(ServerTest, OversizedLineIsRefusedAndClosed) {
  start();
  const int fd = raw_connect(path_);
  ASSERT_GE(fd, 0);
  const std::string big = "{\"command\": \"echo\", \"args\": {\"s\": \"" +
                          std::string(kMaxRequestBytes, 'y') + "\"}}\n";
  // The server may close while we are still sending; the reply is what matters.
  send_all(fd, big);
  const json resp = json::parse(read_line(fd));
  EXPECT_EQ(resp["ok"], false);
  EXPECT_EQ(resp["error"], "request too large (limit 65536 bytes)");
  EXPECT_TRUE(closed_by_peer(fd));
  ::close(fd);
}

TEST_F(ServerTest, RequestJustUnderTheLimitIsServed) {
  start();
  const std::string prefix = "{\"command\": \"echo\", \"args\": {\"s\": \"";
  const std::string suffix = "\"}}";
  const std::string payload(kMaxRequestBytes - prefix.size() - suffix.size(), 'y');
  const int fd = raw_connect(path_);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(send_all(fd, prefix + payload + suffix + "\n"));
  const json resp = json::parse(read_line(fd));
  EXPECT_EQ(resp["ok"], true);
  EXPECT_EQ(resp["result"]["s"].get<std::string>().size(), payload.size());
  ::close(fd);
}

TEST_F(ServerTest, MultipleRequestsOnOneConnection) {
  start();
  std::string err;
  Connection conn;
  ASSERT_TRUE(conn.connect(path_, &err)) << err;
  for (int i = 0; i < 5; ++i) {
    const auto resp = conn.request({{"command", "echo"}, {"args", {{"i", i}}}}, &err);
    ASSERT_TRUE(resp) << err;
    EXPECT_EQ((*resp)["result"]["i"], i);
  }
  const auto unknown = conn.request({{"command", "nope"}}, &err);
  ASSERT_TRUE(unknown) << err;
  EXPECT_EQ((*unknown)["ok"], false);
  const auto again = conn.request({{"command", "echo"}, {"args", {{"i", 9}}}}, &err);
  ASSERT_TRUE(again) << err;
  EXPECT_EQ((*again)["result"]["i"], 9);
}

TEST_F(ServerTest, PipelinedRequestsAnsweredInOrder) {
  start();
  const int fd = raw_connect(path_);
  ASSERT_GE(fd, 0);
  std::string batch;
  for (int i = 0; i < 20; ++i) {
    batch += "{\"command\": \"echo\", \"args\": {\"i\": " + std::to_string(i) + "}}\n\n";
  }
  ASSERT_TRUE(send_all(fd, batch));
  for (int i = 0; i < 20; ++i) EXPECT_EQ(json::parse(read_line(fd))["result"]["i"], i);
  ::close(fd);
}

TEST_F(ServerTest, LastRequestWithoutNewlineAnsweredAtEof) {
  start();
  const int fd = raw_connect(path_);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(send_all(fd, "{\"command\": \"echo\", \"args\": {\"eof\": true}}"));
  ::shutdown(fd, SHUT_WR);
  const json resp = json::parse(read_line(fd));
  EXPECT_EQ(resp["result"]["eof"], true);
  EXPECT_TRUE(closed_by_peer(fd));
  ::close(fd);
}

TEST_F(ServerTest, LargeResponseSurvivesPartialWrites) {
  start();
  std::string err;
  Connection conn;
  ASSERT_TRUE(conn.connect(path_, &err)) << err;
  // Far more than a Unix socket buffers (~200 KiB), so the server must write it in pieces. The
  // timeouts are generous: under ASan at -O0 on a loaded CI machine building the reply is slow.
  constexpr int kSize = 2 * 1024 * 1024;
  const auto resp = conn.request({{"command", "big"}, {"args", {{"size", kSize}}}}, &err, 60000);
  ASSERT_TRUE(resp) << err;
  EXPECT_EQ((*resp)["result"]["blob"].get<std::string>(), std::string(kSize, 'z'));
  const auto next = conn.request({{"command", "echo"}, {"args", {{"after", 1}}}}, &err);
  ASSERT_TRUE(next) << err;
  EXPECT_EQ((*next)["result"]["after"], 1);
}

TEST_F(ServerTest, SlowReaderDoesNotBlockOthers) {
  start();
  // Ask for a big reply and never read it: the server must keep serving other clients.
  const int slow = raw_connect(path_);
  ASSERT_GE(slow, 0);
  ASSERT_TRUE(send_all(slow, "{\"command\": \"big\", \"args\": {\"size\": 4000000}}\n"));
  std::string err;
  // Bounded, not a speed test: it only has to be answered while the slow reader reads nothing.
  const auto resp = request(path_, {{"command", "echo"}, {"args", {{"x", 1}}}}, &err, 30000);
  ASSERT_TRUE(resp) << err;
  EXPECT_EQ((*resp)["result"]["x"], 1);
  ::close(slow);
}

TEST_F(ServerTest, SocketIsRootOnly) {
  struct stat st {};
  ASSERT_EQ(::lstat(path_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
}

TEST_F(ServerTest, SecondServerOnLiveSocketRefused) {
  Server second;
  std::string err;
  EXPECT_FALSE(second.listen(path_, &err));
  EXPECT_NE(err.find("already listening"), std::string::npos) << err;
  // The first server's socket is untouched.
  start();
  const auto resp = request(path_, {{"command", "echo"}}, &err);
  ASSERT_TRUE(resp) << err;
  EXPECT_EQ((*resp)["ok"], true);
}

TEST_F(ServerTest, ListenTwiceRefused) {
  std::string err;
  EXPECT_FALSE(server_.listen(dir_.file("other.sock"), &err));
  EXPECT_NE(err.find("already listening"), std::string::npos) << err;
}

TEST_F(ServerTest, CloseRemovesTheSocketAndAllowsListeningAgain) {
  server_.close();
  EXPECT_FALSE(server_.listening());
  EXPECT_FALSE(std::filesystem::exists(path_));
  std::string err;
  ASSERT_TRUE(server_.listen(path_, &err)) << err;
  start();
  EXPECT_TRUE(request(path_, {{"command", "echo"}}, &err)) << err;
}

TEST(ServerListen, StaleSocketFileReplaced) {
  TempDir dir;
  const std::string path = dir.file("stale.sock");
  {
    // A socket file with nobody listening: what a crashed gateway leaves behind.
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    ::close(fd);
  }
  ASSERT_TRUE(std::filesystem::is_socket(path));
  Server server;
  add_test_handlers(server);
  std::string err;
  ASSERT_TRUE(server.listen(path, &err)) << err;
  ServerThread thread(server);
  const auto resp = request(path, {{"command", "echo"}, {"args", {{"k", "v"}}}}, &err);
  ASSERT_TRUE(resp) << err;
  EXPECT_EQ((*resp)["result"]["k"], "v");
}

TEST(ServerListen, PathThatIsNotASocketRefused) {
  TempDir dir;
  const std::string path = dir.file("regular");
  std::ofstream(path) << "keep me\n";
  Server server;
  std::string err;
  EXPECT_FALSE(server.listen(path, &err));
  EXPECT_NE(err.find("not a socket"), std::string::npos) << err;
  EXPECT_TRUE(std::filesystem::is_regular_file(path));
}

TEST(ServerListen, CreatesParentDirectories) {
  TempDir dir;
  const std::string path = dir.path() + "/run/sluice/sluice.sock";
  const mode_t old_umask = ::umask(077);  // directories must be 0755 whatever the umask
  Server server;
  std::string err;
  const bool ok = server.listen(path, &err);
  ::umask(old_umask);
  ASSERT_TRUE(ok) << err;
  struct stat st {};
  ASSERT_EQ(::stat((dir.path() + "/run/sluice").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0755u);
  ASSERT_EQ(::stat((dir.path() + "/run").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0755u);
  ASSERT_EQ(::lstat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
}

TEST(ServerListen, DestructorRemovesTheSocket) {
  TempDir dir;
  const std::string path = dir.file("s.sock");
  {
    Server server;
    std::string err;
    ASSERT_TRUE(server.listen(path, &err)) << err;
    EXPECT_TRUE(std::filesystem::is_socket(path));
  }
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(ServerListen, DoesNotRemoveASocketItDidNotCreate) {
  TempDir dir;
  const std::string path = dir.file("s.sock");
  auto first = std::make_unique<Server>();
  std::string err;
  ASSERT_TRUE(first->listen(path, &err)) << err;
  // Someone replaced the file (a second gateway after ours hung): ours must leave it alone.
  ASSERT_EQ(::unlink(path.c_str()), 0);
  Server second;
  ASSERT_TRUE(second.listen(path, &err)) << err;
  first.reset();
  EXPECT_TRUE(std::filesystem::is_socket(path));
}

TEST(ServerListen, PathTooLongRefused) {
  Server server;
  std::string err;
  EXPECT_FALSE(server.listen("/tmp/" + std::string(200, 'a'), &err));
  EXPECT_FALSE(err.empty());
}

TEST(ServerLimitsTest, IdleClientsAreClosed) {
  TempDir dir;
  const std::string path = dir.file("s.sock");
  ServerLimits limits;
  limits.idle_timeout_ms = 100;
  Server server(limits);
  std::string err;
  ASSERT_TRUE(server.listen(path, &err)) << err;
  ServerThread thread(server);
  const int fd = raw_connect(path);
  ASSERT_GE(fd, 0);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(closed_by_peer(fd));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
  ::close(fd);
}

TEST(ServerLimitsTest, TooManyClientsRefused) {
  TempDir dir;
  const std::string path = dir.file("s.sock");
  ServerLimits limits;
  limits.max_clients = 2;
  Server server(limits);
  add_test_handlers(server);
  std::string err;
  ASSERT_TRUE(server.listen(path, &err)) << err;
  ServerThread thread(server);
  Connection a, b;
  ASSERT_TRUE(a.connect(path, &err)) << err;
  ASSERT_TRUE(b.connect(path, &err)) << err;
  // Make sure both are accepted before the third arrives.
  ASSERT_TRUE(a.request({{"command", "echo"}}, &err)) << err;
  ASSERT_TRUE(b.request({{"command", "echo"}}, &err)) << err;
  const int fd = raw_connect(path);
  ASSERT_GE(fd, 0);
  const json resp = json::parse(read_line(fd));
  EXPECT_EQ(resp["ok"], false);
  EXPECT_EQ(resp["error"], "too many control connections (limit 2)");
  EXPECT_TRUE(closed_by_peer(fd));
  ::close(fd);
  // Once one leaves, a newcomer is served.
  a.close();
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const auto ok = request(path, {{"command", "echo"}}, &err);
  ASSERT_TRUE(ok) << err;
  EXPECT_EQ((*ok)["ok"], true);
}

TEST(ServerPoll, ReturnsPromptlyWhenIdle) {
  TempDir dir;
  Server server;
  server.poll(0);  // not listening: a no-op
  std::string err;
  ASSERT_TRUE(server.listen(dir.file("s.sock"), &err)) << err;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 100; ++i) server.poll(0);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
}

TEST(ServerHandleLine, AnswersWithoutAConnection) {
  Server server;
  add_test_handlers(server);
  EXPECT_EQ(server.handle_line(R"({"command":"echo","args":{"a":1}})"),
            "{\"ok\":true,\"result\":{\"a\":1}}\n");
  EXPECT_EQ(server.handle_line(R"({"command":"zzz"})"),
            "{\"error\":\"unknown command 'zzz'\",\"ok\":false}\n");
}

TEST(Client, UnreachableSocket) {
  TempDir dir;
  std::string err;
  EXPECT_FALSE(request(dir.file("nobody.sock"), {{"command", "status"}}, &err));
  EXPECT_NE(err.find("cannot connect"), std::string::npos) << err;
}

TEST(Client, TimesOutWhenTheServerNeverAnswers) {
  TempDir dir;
  Server server;  // listening, never polled: the connection is queued, nobody answers
  std::string err;
  ASSERT_TRUE(server.listen(dir.file("s.sock"), &err)) << err;
  const auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(request(dir.file("s.sock"), {{"command", "status"}}, &err, 200));
  EXPECT_NE(err.find("timed out"), std::string::npos) << err;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
}

TEST(Protocol, ReplyWireForm) {
  EXPECT_EQ(Reply::success(json{{"a", 1}}).to_json(), (json{{"ok", true}, {"result", {{"a", 1}}}}));
  EXPECT_EQ(Reply::failure("nope").to_json(), (json{{"ok", false}, {"error", "nope"}}));
  EXPECT_EQ(encode_line(json{{"s", std::string("\xff")}}), "{\"s\":\"\xEF\xBF\xBD\"}\n");
}

}  // namespace
}  // namespace sluice::ctl

namespace sluice::ctl {
namespace {

using nlohmann::json;

// Deferred replies: the handler answers later through complete(); the client's next requests
// wait behind it, so replies keep the order of the requests.
class DeferredTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_.file("sluice.sock");
    server_.add_handler("echo", [](const json& args) { return Reply::success(args); });
    server_.add_handler("slow", [this](const json&) {
      ++next_token_;
      return Reply::deferred(next_token_);
    });
    std::string err;
    ASSERT_TRUE(server_.listen(path_, &err)) << err;
  }
  // Polls (this thread owns the server) until `done` or about 5 s.
  template <typename F>
  bool poll_until(F done) {
    for (int i = 0; i < 500; ++i) {
      server_.poll(10);
      if (done()) return true;
    }
    return false;
  }
  static bool readable(int fd) {
    char ch;
    return ::recv(fd, &ch, 1, MSG_PEEK | MSG_DONTWAIT) == 1;
  }

  testing::TempDir dir_;
  std::string path_;
  Server server_;
  uint64_t next_token_ = 0;
};

TEST_F(DeferredTest, ReplyComesOnCompleteAndLaterRequestsWaitBehindIt) {
  const int fd = testing::raw_connect(path_);
  ASSERT_GE(fd, 0);
  // Two requests in one write: the second must not be answered before the first.
  ASSERT_TRUE(testing::send_all(fd, R"({"command":"slow","id":"a"})" "\n" R"({"command":"echo","args":{"x":1},"id":"b"})" "\n"));
  ASSERT_TRUE(poll_until([&] { return server_.pending_count() == 1; }));
  for (int i = 0; i < 20; ++i) server_.poll(5);
  EXPECT_FALSE(readable(fd));  // nothing yet, not even the echo
  EXPECT_EQ(next_token_, 1u);

  EXPECT_FALSE(server_.complete(99, Reply::success()));  // nobody waits on that token
  EXPECT_TRUE(server_.complete(1, Reply::success({{"policy_generation", 2}})));
  EXPECT_EQ(server_.pending_count(), 0u);
  bool got = poll_until([&] { return readable(fd); });
  ASSERT_TRUE(got);
  json first = json::parse(testing::read_line(fd));
  EXPECT_EQ(first["ok"], true);
  EXPECT_EQ(first["id"], "a");
  EXPECT_EQ(first["result"]["policy_generation"], 2);
  ASSERT_TRUE(poll_until([&] { return readable(fd); }));
  json second = json::parse(testing::read_line(fd));
  EXPECT_EQ(second["id"], "b");
  EXPECT_EQ(second["result"]["x"], 1);
  // A completed token is spent.
  EXPECT_FALSE(server_.complete(1, Reply::success()));
  ::close(fd);
}

TEST_F(DeferredTest, FailureReplyAndHalfClosedClient) {
  const int fd = testing::raw_connect(path_);
  ASSERT_GE(fd, 0);
  // The request, then end of input (printf ... | socat): the answer still comes, then the close.
  ASSERT_TRUE(testing::send_all(fd, R"({"command":"slow"})" "\n"));
  ::shutdown(fd, SHUT_WR);
  ASSERT_TRUE(poll_until([&] { return server_.pending_count() == 1; }));
  for (int i = 0; i < 20; ++i) server_.poll(5);
  EXPECT_TRUE(server_.complete(next_token_, Reply::failure("configuration rejected")));
  ASSERT_TRUE(poll_until([&] { return readable(fd); }));
  json reply = json::parse(testing::read_line(fd));
  EXPECT_EQ(reply["ok"], false);
  EXPECT_EQ(reply["error"], "configuration rejected");
  EXPECT_FALSE(reply.contains("id"));
  for (int i = 0; i < 20; ++i) server_.poll(5);
  EXPECT_TRUE(testing::closed_by_peer(fd));
  ::close(fd);
}

TEST_F(DeferredTest, ClientGoneBeforeCompletion) {
  const int fd = testing::raw_connect(path_);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(testing::send_all(fd, R"({"command":"slow"})" "\n"));
  ASSERT_TRUE(poll_until([&] { return server_.pending_count() == 1; }));
  ::close(fd);
  ASSERT_TRUE(poll_until([&] { return server_.pending_count() == 0; }));
  EXPECT_FALSE(server_.complete(next_token_, Reply::success()));
  // Without a connection there is nobody to complete: handle_line gives nothing.
  EXPECT_EQ(server_.handle_line(R"({"command":"slow"})"), "");
}

}  // namespace
}  // namespace sluice::ctl
