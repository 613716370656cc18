#include "engine/cli_args.h"

#include <algorithm>
#include <filesystem>

#include "engine/check.h"
#include "engine/config_schema.h"

namespace vit {
namespace {

constexpr std::string_view kFlags[] = {"--print-config", "--help", "-h"};

std::string usage_line(std::string_view program) {
  return "usage: " + std::string(program) + " CONFIG.toml [key=value ...] [--print-config] [--help]";
}

[[noreturn]] void fail_flag(const std::string& arg, std::string_view program) {
  const auto eq = arg.find('=');
  if (arg.size() > 2 && arg.rfind("--", 0) == 0 && eq != std::string::npos)
    fail("unknown flag '", arg, "': overrides are written without dashes, e.g. ", arg.substr(2), " (",
         usage_line(program), ")");
  std::string_view best;
  size_t best_d = 3;  // only suggest near misses
  for (auto f : kFlags)
    if (size_t d = config_schema::edit_distance(arg, f); d < best_d) best_d = d, best = f;
  if (!best.empty()) fail("unknown flag '", arg, "' (did you mean '", best, "'?)");
  fail("unknown flag '", arg, "' (", usage_line(program), ")");
}

}  // namespace

CliArgs parse_cli_args(const std::vector<std::string>& args, std::string_view program) {
  CliArgs out;
  // Help wins over everything else on the line, so `vit_train --help` needs no config.
  out.help = std::any_of(args.begin(), args.end(), [](const std::string& a) { return a == "--help" || a == "-h"; });
  if (out.help) return out;
  for (const auto& a : args) {
    if (a == "--print-config") {
      out.print_config = true;
    } else if (a.size() > 1 && a[0] == '-') {
      fail_flag(a, program);
    } else if (a.find('=') != std::string::npos) {
      out.overrides.push_back(a);
    } else if (out.config_path.empty()) {
      out.config_path = a;
    } else if (a.size() > 5 && a.ends_with(".toml")) {
      fail("unexpected argument '", a, "': give one config file (already '", out.config_path, "')");
    } else {
      out.overrides.push_back(a);  // a key without '=': the config loader says how to write it
    }
  }
  if (out.config_path.empty()) fail("missing config file (", usage_line(program), ")");
  return out;
}

CliArgs parse_cli_args(int argc, const char* const* argv) {
  const std::string program = argc > 0 ? std::filesystem::path(argv[0]).filename().string() : "vit_train";
  std::vector<std::string> args(argv + std::min(argc, 1), argv + std::max(argc, 1));
  return parse_cli_args(args, program);
}

std::string cli_usage(std::string_view program) {
  return usage_line(program) +
         "\n\n"
         "  CONFIG.toml      the run's configuration (see configs/)\n"
         "  key=value        override one key, e.g. model.depth=6 run.device=cpu optimizer.betas=[0.9,0.95]\n"
         "                   (the value is TOML; a bare word is a string)\n"
         "  --print-config   print the resolved configuration (every key) as TOML and exit\n"
         "  -h, --help       print this help and exit\n";
}

}  // namespace vit
