#include "controlplane/wg/cookie.h"

#include <cstring>

namespace sluice::wg {

void cookie_source_bytes(uint8_t (&out)[kCookieSourceLen], Endpoint src) {
  out[0] = uint8_t(src.ip >> 24);
  out[1] = uint8_t(src.ip >> 16);
  out[2] = uint8_t(src.ip >> 8);
  out[3] = uint8_t(src.ip);
  out[4] = uint8_t(src.port);
  out[5] = uint8_t(src.port >> 8);
}

CookieChecker::CookieChecker(const Key& local_public) {
  hash(mac1_key_, label(kLabelMac1), local_public);
  hash(cookie_key_, label(kLabelCookie), local_public);
}

CookieChecker::~CookieChecker() { secure_zero(secret_); }

bool CookieChecker::check_mac1(Bytes msg) const {
  if (msg.size() < 2 * kMacLen) return false;
  Mac m;
  mac(m, mac1_key_, msg.first(mac1_offset(msg.size())));
  return equal_ct(m, msg.subspan(mac1_offset(msg.size()), kMacLen));
}

void CookieChecker::make_cookie(Mac& cookie, Endpoint src) const {
  uint8_t src_bytes[kCookieSourceLen];
  cookie_source_bytes(src_bytes, src);
  mac(cookie, secret_, src_bytes);
}

bool CookieChecker::check_mac2(Bytes msg, Endpoint src, uint64_t now) const {
  if (msg.size() < 2 * kMacLen) return false;
  if (!has_secret_ || now - secret_set_ > kCookieRefreshNs) return false;
  Mac cookie;
  make_cookie(cookie, src);
  Mac m;
  mac(m, cookie, msg.first(mac2_offset(msg.size())));
  secure_zero(cookie);
  return equal_ct(m, msg.subspan(mac2_offset(msg.size()), kMacLen));
}

void CookieChecker::create_reply(MessageCookieReply& out, Bytes msg, Endpoint src, uint64_t now) {
  if (!has_secret_ || now - secret_set_ > kCookieRefreshNs) {
    random_bytes(secret_.data(), secret_.size());
    secret_set_ = now;
    has_secret_ = true;
  }
  Mac cookie;
  make_cookie(cookie, src);
  uint32_t receiver;  // the answered message's sender index, copied as is (little-endian)
  std::memcpy(&receiver, msg.data() + 4, sizeof(receiver));
  std::memset(&out, 0, sizeof(out));
  const uint8_t type[4] = {uint8_t(MessageType::cookie_reply), 0, 0, 0};
  std::memcpy(&out.type, type, sizeof(type));
  out.receiver_index = receiver;
  random_bytes(out.nonce, sizeof(out.nonce));
  xaead_encrypt(out.encrypted_cookie, cookie_key_, out.nonce, cookie,
                msg.subspan(mac1_offset(msg.size()), kMacLen));
  secure_zero(cookie);
}

CookieGenerator::CookieGenerator(const Key& remote_public) {
  hash(mac1_key_, label(kLabelMac1), remote_public);
  hash(cookie_key_, label(kLabelCookie), remote_public);
}

CookieGenerator::~CookieGenerator() { secure_zero(cookie_); }

void CookieGenerator::add_macs(std::span<uint8_t> msg, uint64_t now) {
  const size_t m1 = mac1_offset(msg.size());
  const size_t m2 = mac2_offset(msg.size());
  mac(last_mac1_, mac1_key_, Bytes(msg.first(m1)));
  std::memcpy(msg.data() + m1, last_mac1_.data(), kMacLen);
  has_last_mac1_ = true;
  if (has_fresh_cookie(now)) {
    Mac m2v;
    mac(m2v, cookie_, Bytes(msg.first(m2)));
    std::memcpy(msg.data() + m2, m2v.data(), kMacLen);
  } else {
    std::memset(msg.data() + m2, 0, kMacLen);
  }
}

bool CookieGenerator::consume_reply(const MessageCookieReply& reply, uint64_t now) {
  if (!has_last_mac1_) return false;
  Mac cookie;
  if (!xaead_decrypt(cookie.data(), cookie_key_, reply.nonce, reply.encrypted_cookie, last_mac1_)) {
    return false;
  }
  cookie_ = cookie;
  cookie_set_ = now;
  has_cookie_ = true;
  secure_zero(cookie);
  return true;
}

bool CookieGenerator::has_fresh_cookie(uint64_t now) const {
  return has_cookie_ && now - cookie_set_ < kCookieRefreshNs;
}

}  // namespace sluice::wg
