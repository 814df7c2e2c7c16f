#include <gtest/gtest.h>

#include <ctime>

#include "controlplane/ctl/format.h"

namespace sluice::ctl {
namespace {

using nlohmann::json;

TEST(FormatSubnets, Table) {
  const auto now = int64_t(std::time(nullptr));
  const json result = {
      {"subnets",
       {{{"name", "Menlo Park Office"}, {"prefix", "198.51.100.0/24"}, {"origin", "custom"}, {"preferred", true},
         {"available", true}, {"interface", "lan"}, {"routable", true}, {"port", "lan"}, {"last_seen", now}},
        {{"name", "Internet"}, {"prefix", "0.0.0.0/0"}, {"origin", "custom"}, {"preferred", false},
         {"available", nullptr}, {"interface", nullptr}, {"routable", true}, {"port", "wan"}},
        {{"name", "203.0.113.128/25"}, {"prefix", "203.0.113.128/25"}, {"origin", "discovered"},
         {"preferred", false}, {"available", false}, {"interface", "dummy0"}, {"routable", false},
         {"port", nullptr}, {"last_seen", now - 150}}}},
      {"kernel_discovery", "ok"}};
  const std::string out = format_result("subnets", result);
  EXPECT_EQ(out.substr(0, out.find('\n')),
            "NAME               PREFIX            ORIGIN      PREFERRED  AVAILABLE  INTERFACE  PORT  LAST SEEN");
  EXPECT_NE(out.find("Menlo Park Office  198.51.100.0/24   custom      yes        yes        lan        lan   now\n"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("Internet           0.0.0.0/0         custom      no         -          -          wan   -\n"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("203.0.113.128/25   203.0.113.128/25  discovered  no         no         dummy0     -     2."),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("minutes ago"), std::string::npos) << out;
  EXPECT_NE(out.find("not routed to peers by the data path"), std::string::npos) << out;
  EXPECT_EQ(format_result("subnets_rediscover", result), out);
}

TEST(FormatSubnets, EmptyAndOdd) {
  EXPECT_EQ(format_subnets(json{{"subnets", json::array()}}), "No subnets.\n");
  EXPECT_EQ(format_subnets(json::array()), "No subnets.\n");
  // Missing fields show as "-", a discovery problem is said.
  const std::string out =
      format_subnets(json{{"subnets", {{{"prefix", "192.0.2.0/24"}}}}, {"kernel_discovery", "netlink: denied"}});
  EXPECT_NE(out.find("-     192.0.2.0/24"), std::string::npos) << out;
  EXPECT_NE(out.find("kernel discovery: netlink: denied"), std::string::npos) << out;
  EXPECT_EQ(format_subnets(json{{"other", 1}}), "other: 1\n");
}

}  // namespace
}  // namespace sluice::ctl

#include "controlplane/ctl/cli.h"

namespace sluice::ctl {
namespace {

TEST(SubnetsCommandLine, ForgetAndRediscover) {
  std::string err;
  auto inv = parse_command_line({"subnets", "forget", "--prefix", "203.0.113.128/25", "--json"}, &err);
  ASSERT_TRUE(inv) << err;
  EXPECT_EQ(inv->command, "subnets_forget");
  EXPECT_EQ(inv->args["prefix"], "203.0.113.128/25");
  EXPECT_TRUE(inv->json_output);
  EXPECT_FALSE(parse_command_line({"subnets", "forget"}, &err));
  EXPECT_NE(err.find("missing --prefix"), std::string::npos) << err;
  inv = parse_command_line({"subnets", "rediscover"}, &err);
  ASSERT_TRUE(inv) << err;
  EXPECT_EQ(inv->command, "subnets_rediscover");
  EXPECT_NE(usage().find("subnets forget --prefix PREFIX"), std::string::npos);
}

}  // namespace
}  // namespace sluice::ctl
