// One line per event on stderr: `ts=... level=info event=handshake_complete peer=laptop-1 ...`.
// Values with spaces are quoted. Never pass key material here.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

namespace sluice::log {

enum class Level { debug, info, warn, error };

void set_level(Level l);
bool enabled(Level l);

using Field = std::pair<std::string_view, std::string>;
void write(Level l, std::string_view event, std::initializer_list<Field> fields = {});

inline void info(std::string_view event, std::initializer_list<Field> f = {}) { write(Level::info, event, f); }
inline void warn(std::string_view event, std::initializer_list<Field> f = {}) { write(Level::warn, event, f); }
inline void error(std::string_view event, std::initializer_list<Field> f = {}) { write(Level::error, event, f); }
inline void debug(std::string_view event, std::initializer_list<Field> f = {}) {
  if (enabled(Level::debug)) write(Level::debug, event, f);
}

}  // namespace sluice::log
