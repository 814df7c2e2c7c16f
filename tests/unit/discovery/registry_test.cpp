#include "controlplane/discovery/registry.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

namespace sluice::discovery {
namespace {

using config::Prefix;

Prefix P(const char* s) { return *config::parse_prefix(s); }
Observation K(const char* prefix, const char* iface) { return {P(prefix), iface, Source::kernel}; }
Observation Port(const char* prefix, const char* port) { return {P(prefix), port, Source::port}; }

// A copy: the lists are temporaries.
std::optional<KnownSubnet> find(const std::vector<KnownSubnet>& v, const char* prefix) {
  for (const auto& k : v)
    if (k.prefix == P(prefix)) return k;
  return std::nullopt;
}

struct TempDir {
  std::string path;
  TempDir() {
    char t[] = "/tmp/sluice-discovery-test.XXXXXX";
    path = mkdtemp(t);
  }
  ~TempDir() { std::system(("rm -rf '" + path + "'").c_str()); }
};

TEST(Registry, DiscoveredSubnetsAppearAndBecomeUnavailable) {
  SubnetRegistry r;
  EXPECT_TRUE(r.update({K("203.0.113.128/25", "dummy0"), Port("198.51.100.0/24", "lan")}, 100));
  auto l = r.list();
  ASSERT_EQ(l.size(), 2u);
  // Discovered subnets in address order.
  EXPECT_EQ(l[0].prefix, P("198.51.100.0/24"));
  EXPECT_EQ(l[0].name, "198.51.100.0/24");
  EXPECT_EQ(l[0].origin, Origin::discovered);
  EXPECT_EQ(l[0].available, std::optional<bool>(true));
  EXPECT_EQ(l[0].interfaces, std::vector<std::string>{"lan"});
  EXPECT_EQ(l[0].sources, std::vector<Source>{Source::port});
  EXPECT_EQ(l[1].interfaces, std::vector<std::string>{"dummy0"});
  EXPECT_EQ(l[1].first_seen, 100);

  // The same again is only a refresh: nothing to save.
  EXPECT_FALSE(r.update({K("203.0.113.128/25", "dummy0"), Port("198.51.100.0/24", "lan")}, 101));
  EXPECT_EQ(find(r.list(), "203.0.113.128/25")->last_seen, 101);

  // Gone: still known, unavailable, last seen where and when it was.
  EXPECT_TRUE(r.update({Port("198.51.100.0/24", "lan")}, 150));
  auto k = find(r.list(), "203.0.113.128/25");
  ASSERT_TRUE(k);
  EXPECT_EQ(k->available, std::optional<bool>(false));
  EXPECT_EQ(k->interfaces, std::vector<std::string>{"dummy0"});
  EXPECT_EQ(k->first_seen, 100);
  EXPECT_EQ(k->last_seen, 101);
  EXPECT_FALSE(r.update({Port("198.51.100.0/24", "lan")}, 160));

  // Back, on another interface: available, first seen unchanged.
  EXPECT_TRUE(r.update({Port("198.51.100.0/24", "lan"), K("203.0.113.128/25", "eth9")}, 200));
  k = find(r.list(), "203.0.113.128/25");
  EXPECT_EQ(k->available, std::optional<bool>(true));
  EXPECT_EQ(k->interfaces, std::vector<std::string>{"eth9"});
  EXPECT_EQ(k->first_seen, 100);
  EXPECT_EQ(k->last_seen, 200);
  // Moving interfaces is worth saving.
  EXPECT_TRUE(r.update({Port("198.51.100.0/24", "lan"), K("203.0.113.128/25", "eth8")}, 201));
}

TEST(Registry, OneSubnetOnSeveralInterfacesIsOneRow) {
  SubnetRegistry r;
  r.update({K("203.0.113.0/24", "b"), K("203.0.113.0/24", "a"), K("203.0.113.0/24", "a"),
            Port("203.0.113.0/24", "lan")},
           1);
  auto l = r.list();
  ASSERT_EQ(l.size(), 1u);
  EXPECT_EQ(l[0].interfaces, (std::vector<std::string>{"a", "b", "lan"}));
  // Losing one of them keeps it available.
  EXPECT_TRUE(r.update({K("203.0.113.0/24", "a")}, 2));
  EXPECT_EQ(r.list()[0].available, std::optional<bool>(true));
}

TEST(Registry, CustomSubnetsMergeWithDiscoveredOnes) {
  SubnetRegistry r;
  r.set_custom({{P("198.51.100.0/24"), "Menlo Park Office", true},
                {P("192.0.2.0/24"), "", false},
                {P("0.0.0.0/0"), "Internet", false}});
  r.update({Port("198.51.100.0/24", "lan"), K("203.0.113.128/25", "dummy0")}, 10);
  auto l = r.list();
  ASSERT_EQ(l.size(), 4u);
  // Configuration order first, then discovered ones.
  EXPECT_EQ(l[0].name, "Menlo Park Office");
  EXPECT_EQ(l[0].origin, Origin::custom);
  EXPECT_TRUE(l[0].preferred);
  EXPECT_EQ(l[0].available, std::optional<bool>(true));  // carried by an interface: judged
  EXPECT_EQ(l[0].interfaces, std::vector<std::string>{"lan"});
  EXPECT_EQ(l[1].name, "192.0.2.0/24");
  EXPECT_EQ(l[1].available, std::nullopt);  // not on any interface: not judged
  EXPECT_EQ(l[2].name, "Internet");
  EXPECT_EQ(l[2].available, std::nullopt);
  EXPECT_EQ(l[3].origin, Origin::discovered);
  EXPECT_EQ(l[3].prefix, P("203.0.113.128/25"));

  // The office LAN goes down: the custom subnet shows unavailable.
  r.update({K("203.0.113.128/25", "dummy0")}, 11);
  EXPECT_EQ(r.list()[0].available, std::optional<bool>(false));

  // Host bits in a custom prefix are ignored.
  r.set_custom({{P("203.0.113.129/25"), "dmz", false}});
  l = r.list();
  ASSERT_EQ(l.size(), 2u);  // dmz (merged with the discovered /25), then 198.51.100.0/24
  EXPECT_EQ(l[0].name, "dmz");
  EXPECT_EQ(l[0].prefix, P("203.0.113.128/25"));
  EXPECT_EQ(l[0].available, std::optional<bool>(true));
  EXPECT_EQ(l[1].origin, Origin::discovered);
}

TEST(Registry, ForgetAndRediscover) {
  SubnetRegistry r;
  r.set_custom({{P("192.0.2.0/24"), "wan", false}});
  r.update({K("203.0.113.128/25", "d0"), K("203.0.113.0/26", "d1")}, 1);
  r.update({K("203.0.113.128/25", "d0")}, 2);  // the /26 goes away
  using R = SubnetRegistry::ForgetResult;
  EXPECT_EQ(r.forget(P("192.0.2.0/24")), R::custom);
  EXPECT_EQ(r.forget(P("198.51.100.0/24")), R::unknown);
  EXPECT_EQ(r.forget(P("203.0.113.0/26")), R::forgotten);  // unavailable: dropped
  EXPECT_FALSE(find(r.list(), "203.0.113.0/26"));
  EXPECT_EQ(r.forget(P("203.0.113.129/25")), R::hidden);  // still there: hidden (host bits ignored)
  EXPECT_FALSE(find(r.list(), "203.0.113.128/25"));
  // Updates do not bring a hidden subnet back...
  r.update({K("203.0.113.128/25", "d0")}, 3);
  EXPECT_FALSE(find(r.list(), "203.0.113.128/25"));
  // ...but a dropped one is discovered afresh when it comes back.
  r.update({K("203.0.113.128/25", "d0"), K("203.0.113.0/26", "d1")}, 4);
  ASSERT_TRUE(find(r.list(), "203.0.113.0/26"));
  EXPECT_EQ(find(r.list(), "203.0.113.0/26")->first_seen, 4);
  // Rediscover: unhide, then the next observation re-populates it.
  EXPECT_EQ(r.unhide_all(), 1u);
  EXPECT_TRUE(r.update({K("203.0.113.128/25", "d0"), K("203.0.113.0/26", "d1")}, 5));
  ASSERT_TRUE(find(r.list(), "203.0.113.128/25"));
  EXPECT_EQ(find(r.list(), "203.0.113.128/25")->first_seen, 5);
}

TEST(Registry, PersistenceRoundTrip) {
  TempDir dir;
  const std::string file = state_file(dir.path + "/");
  EXPECT_EQ(file, dir.path + "/known_subnets.json");
  SubnetRegistry a;
  std::string err;
  // A missing file is an empty registry.
  ASSERT_TRUE(a.load(file, &err)) << err;
  EXPECT_TRUE(a.list().empty());
  a.update({K("203.0.113.128/25", "dummy0"), Port("198.51.100.0/24", "lan"), K("192.0.2.0/24", "eth1")}, 100);
  a.update({Port("198.51.100.0/24", "lan"), K("192.0.2.0/24", "eth1")}, 120);
  ASSERT_EQ(a.forget(P("192.0.2.0/24")), SubnetRegistry::ForgetResult::hidden);
  ASSERT_TRUE(a.save(file, &err)) << err;
  EXPECT_NE(access((file + ".tmp").c_str(), F_OK), 0);  // renamed into place

  SubnetRegistry b;
  size_t skipped = 9;
  ASSERT_TRUE(b.load(file, &err, &skipped)) << err;
  EXPECT_EQ(skipped, 0u);
  EXPECT_EQ(b.discovered_count(), 2u);
  EXPECT_EQ(b.hidden_count(), 1u);
  auto l = b.list();
  ASSERT_EQ(l.size(), 2u);
  // Everything loaded is unavailable until discovery sees it again, and remembers where.
  for (const auto& k : l) EXPECT_EQ(k.available, std::optional<bool>(false));
  auto k = find(l, "203.0.113.128/25");
  ASSERT_TRUE(k);
  EXPECT_EQ(k->interfaces, std::vector<std::string>{"dummy0"});
  EXPECT_EQ(k->sources, std::vector<Source>{Source::kernel});
  EXPECT_EQ(k->first_seen, 100);
  EXPECT_EQ(k->last_seen, 100);
  EXPECT_EQ(find(l, "198.51.100.0/24")->sources, std::vector<Source>{Source::port});
  EXPECT_EQ(b.to_json(), a.to_json());
  // The hidden one stays hidden after the restart.
  b.update({K("192.0.2.0/24", "eth1"), Port("198.51.100.0/24", "lan")}, 200);
  EXPECT_FALSE(find(b.list(), "192.0.2.0/24"));
  EXPECT_EQ(find(b.list(), "198.51.100.0/24")->available, std::optional<bool>(true));
}

TEST(Registry, BadFilesAreRefusedOrSkipped) {
  TempDir dir;
  const std::string file = dir.path + "/known_subnets.json";
  std::string err;
  SubnetRegistry r;
  std::ofstream(file) << "{ not json";
  EXPECT_FALSE(r.load(file, &err));
  EXPECT_NE(err.find("not valid JSON"), std::string::npos) << err;
  std::ofstream(file) << R"({"version": 7, "subnets": []})";
  EXPECT_FALSE(r.load(file, &err));
  std::ofstream(file) << R"([1, 2])";
  EXPECT_FALSE(r.load(file, &err));
  // Bad entries are skipped, good ones kept.
  std::ofstream(file) << R"({"version": 1, "subnets": [
      {"prefix": "203.0.113.128/25", "seen_on": [{"interface": "d0", "source": "kernel"}], "first_seen": 5},
      {"prefix": "203.0.113.129/25"}, {"prefix": "nonsense"}, 7, {"first_seen": 1},
      {"prefix": "198.51.100.0/24", "seen_on": "x", "first_seen": "yesterday"}],
      "hidden": ["192.0.2.0/24", "bad"]})";
  size_t skipped = 0;
  ASSERT_TRUE(r.load(file, &err, &skipped)) << err;
  EXPECT_EQ(skipped, 5u);
  EXPECT_EQ(r.discovered_count(), 2u);
  EXPECT_EQ(r.hidden_count(), 1u);
  EXPECT_EQ(find(r.list(), "198.51.100.0/24")->first_seen, 0);
}

TEST(Registry, SaveFailsCleanlyInAMissingDirectory) {
  SubnetRegistry r;
  std::string err;
  EXPECT_FALSE(r.save("/nonexistent-sluice-dir/known_subnets.json", &err));
  EXPECT_NE(err.find("nonexistent-sluice-dir"), std::string::npos);
}

TEST(Registry, EnsureDirectoryCreatesParents) {
  TempDir dir;
  std::string err;
  const std::string deep = dir.path + "/a/b/c";
  ASSERT_TRUE(ensure_directory(deep, &err)) << err;
  EXPECT_EQ(access(deep.c_str(), W_OK), 0);
  EXPECT_TRUE(ensure_directory(deep, &err)) << err;  // exists: fine
  std::ofstream(dir.path + "/file") << "x";
  EXPECT_FALSE(ensure_directory(dir.path + "/file", &err));
  EXPECT_FALSE(ensure_directory("", &err));
}

}  // namespace
}  // namespace sluice::discovery
