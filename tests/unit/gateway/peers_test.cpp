// The pure part of peer changes: diff_peers() and check_peers() over config::Peer lists.
#include <gtest/gtest.h>

#include "controlplane/gateway.h"

namespace sluice::cp {
namespace {

config::Peer peer(const std::string& name, uint8_t key, uint32_t va, std::vector<std::string> tags = {}) {
  config::Peer p;
  p.name = name;
  p.public_key.fill(key);
  p.virtual_address = va;
  p.tags = std::move(tags);
  return p;
}

constexpr uint32_t kVa = 0x64400000;  // 100.64.0.0

TEST(DiffPeers, IdenticalListsKeepEverythingUnchanged) {
  std::vector<config::Peer> a = {peer("a", 1, kVa + 2), peer("b", 2, kVa + 3)};
  PeerDiff d = diff_peers(a, a);
  EXPECT_TRUE(d.add.empty());
  EXPECT_TRUE(d.remove.empty());
  ASSERT_EQ(d.keep.size(), 2u);
  for (const auto& m : d.keep) {
    EXPECT_EQ(m.from, m.to);
    EXPECT_EQ(m.changed, 0u);
  }
}

TEST(DiffPeers, MatchesByKeyNotPosition) {
  std::vector<config::Peer> from = {peer("a", 1, kVa + 2), peer("b", 2, kVa + 3), peer("c", 3, kVa + 4)};
  // Reordered, b removed, d added.
  std::vector<config::Peer> to = {peer("d", 4, kVa + 5), peer("c", 3, kVa + 4), peer("a", 1, kVa + 2)};
  PeerDiff d = diff_peers(from, to);
  ASSERT_EQ(d.remove.size(), 1u);
  EXPECT_EQ(d.remove[0], 1u);
  ASSERT_EQ(d.add.size(), 1u);
  EXPECT_EQ(d.add[0], 0u);
  ASSERT_EQ(d.keep.size(), 2u);
  EXPECT_EQ(d.keep[0].from, 2u);
  EXPECT_EQ(d.keep[0].to, 1u);
  EXPECT_EQ(d.keep[0].changed, 0u);
  EXPECT_EQ(d.keep[1].from, 0u);
  EXPECT_EQ(d.keep[1].to, 2u);
}

TEST(DiffPeers, ChangedKeyIsRemoveAndAdd) {
  std::vector<config::Peer> from = {peer("a", 1, kVa + 2)};
  std::vector<config::Peer> to = {peer("a", 9, kVa + 2)};
  PeerDiff d = diff_peers(from, to);
  EXPECT_TRUE(d.keep.empty());
  EXPECT_EQ(d.remove, std::vector<size_t>{0});
  EXPECT_EQ(d.add, std::vector<size_t>{0});
}

TEST(DiffPeers, ReportsEachChangedField) {
  config::Peer a = peer("a", 1, kVa + 2, {"eng"});
  auto changed = [&](auto mutate) {
    config::Peer b = a;
    mutate(b);
    PeerDiff d = diff_peers({a}, {b});
    EXPECT_EQ(d.keep.size(), 1u);
    return d.keep.empty() ? 0u : d.keep[0].changed;
  };
  EXPECT_EQ(changed([](config::Peer&) {}), 0u);
  EXPECT_EQ(changed([](config::Peer& p) { p.name = "a2"; }), uint32_t(kPeerName));
  EXPECT_EQ(changed([](config::Peer& p) { p.virtual_address = kVa + 9; }), uint32_t(kPeerVirtualAddress));
  EXPECT_EQ(changed([](config::Peer& p) { p.preshared_key = config::Key{}; }), 0u)
      << "an all-zero preshared key is the same as none";
  EXPECT_EQ(changed([](config::Peer& p) { p.preshared_key = config::Key{}; p.preshared_key->fill(7); }),
            uint32_t(kPeerPresharedKey));
  EXPECT_EQ(changed([](config::Peer& p) { p.endpoint = config::SockAddr{0xCB007101, 51820}; }),
            uint32_t(kPeerEndpoint));
  EXPECT_EQ(changed([](config::Peer& p) { p.persistent_keepalive = 25; }), uint32_t(kPeerKeepalive));
  EXPECT_EQ(changed([](config::Peer& p) { p.tags = {"ops"}; }), uint32_t(kPeerTags));
  EXPECT_EQ(changed([](config::Peer& p) { p.attributes["managed"] = true; }), uint32_t(kPeerAttributes));
  EXPECT_EQ(changed([](config::Peer& p) {
              p.tags.push_back("x");
              p.persistent_keepalive = 5;
            }),
            uint32_t(kPeerTags | kPeerKeepalive));
  // The key file's path alone is no change.
  EXPECT_EQ(changed([](config::Peer& p) { p.preshared_key_file = "other"; }), 0u);
}

TEST(DiffPeers, EndpointPortCounts) {
  config::Peer a = peer("a", 1, kVa + 2);
  a.endpoint = config::SockAddr{0xCB007101, 51820};
  config::Peer b = a;
  b.endpoint->port = 51821;
  EXPECT_EQ(diff_peers({a}, {b}).keep.at(0).changed, uint32_t(kPeerEndpoint));
}

TEST(DiffPeers, EmptyLists) {
  std::vector<config::Peer> two = {peer("a", 1, kVa + 2), peer("b", 2, kVa + 3)};
  PeerDiff all_new = diff_peers({}, two);
  EXPECT_EQ(all_new.add, (std::vector<size_t>{0, 1}));
  PeerDiff all_gone = diff_peers(two, {});
  EXPECT_EQ(all_gone.remove, (std::vector<size_t>{0, 1}));
  EXPECT_TRUE(diff_peers({}, {}).keep.empty());
}

TEST(DiffPeers, SwappedAddressesAreTwoUpdates) {
  std::vector<config::Peer> from = {peer("a", 1, kVa + 2), peer("b", 2, kVa + 3)};
  std::vector<config::Peer> to = {peer("a", 1, kVa + 3), peer("b", 2, kVa + 2)};
  PeerDiff d = diff_peers(from, to);
  ASSERT_EQ(d.keep.size(), 2u);
  EXPECT_EQ(d.keep[0].changed, uint32_t(kPeerVirtualAddress));
  EXPECT_EQ(d.keep[1].changed, uint32_t(kPeerVirtualAddress));
}

TEST(CheckPeers, AcceptsAValidList) {
  config::Gateway gw;
  gw.virtual_address = kVa + 1;
  gw.public_key.fill(0xEE);
  EXPECT_EQ(check_peers({peer("a", 1, kVa + 2), peer("b", 2, kVa + 3)}, gw), "");
  EXPECT_EQ(check_peers({}, gw), "");
}

TEST(CheckPeers, RejectsDuplicatesAndTheGatewaysOwn) {
  config::Gateway gw;
  gw.virtual_address = kVa + 1;
  gw.public_key.fill(0xEE);
  EXPECT_NE(check_peers({peer("a", 1, kVa + 2), peer("a", 2, kVa + 3)}, gw).find("duplicate peer name 'a'"),
            std::string::npos);
  EXPECT_NE(check_peers({peer("a", 1, kVa + 2), peer("b", 1, kVa + 3)}, gw).find("public key already used"),
            std::string::npos);
  EXPECT_NE(check_peers({peer("a", 1, kVa + 2), peer("b", 2, kVa + 2)}, gw).find("already used by peer 'a'"),
            std::string::npos);
  EXPECT_NE(check_peers({peer("a", 1, kVa + 1)}, gw).find("gateway's own virtual address"), std::string::npos);
  EXPECT_NE(check_peers({peer("a", 0xEE, kVa + 2)}, gw).find("gateway's own public key"), std::string::npos);
  EXPECT_NE(check_peers({peer("", 1, kVa + 2)}, gw).find("needs a name"), std::string::npos);
  EXPECT_NE(check_peers({peer("a", 1, kVa + 2, {""})}, gw).find("non-empty"), std::string::npos);
}

}  // namespace
}  // namespace sluice::cp
