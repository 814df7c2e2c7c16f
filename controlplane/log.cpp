#include "controlplane/log.h"

#include <cstdio>
#include <ctime>

namespace sluice::log {

namespace {
Level g_level = Level::info;
const char* name(Level l) {
  switch (l) {
    case Level::debug: return "debug";
    case Level::info: return "info";
    case Level::warn: return "warn";
    case Level::error: return "error";
  }
  return "?";
}
}  // namespace

void set_level(Level l) { g_level = l; }
bool enabled(Level l) { return l >= g_level; }

void write(Level l, std::string_view event, std::initializer_list<Field> fields) {
  if (!enabled(l)) return;
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  tm t;
  gmtime_r(&ts.tv_sec, &t);
  char when[40];
  strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &t);
  std::string line;
  line.reserve(160);
  line += "ts=";
  line += when;
  char ms[8];
  snprintf(ms, sizeof ms, ".%03dZ", int(ts.tv_nsec / 1000000) % 1000);
  line += ms;
  line += " level=";
  line += name(l);
  line += " event=";
  line += event;
  for (const auto& [k, v] : fields) {
    line += ' ';
    line += k;
    line += '=';
    if (v.empty() || v.find_first_of(" \t\"=") != std::string::npos) {
      line += '"';
      for (char c : v) {
        if (c == '"' || c == '\\') line += '\\';
        line += c;
      }
      line += '"';
    } else {
      line += v;
    }
  }
  line += '\n';
  fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace sluice::log
