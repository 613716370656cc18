// Command line of the programs: `PROGRAM CONFIG.toml [key=value ...] [--print-config] [--help]`.
// Parsing only; the program's main decides what to do with the result.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace vit {

struct CliArgs {
  std::string config_path;               // "" only when help is set
  std::vector<std::string> overrides;    // "a.b.c=value", in command-line order (later ones win)
  bool print_config = false;             // print the resolved config as TOML and exit
  bool help = false;                     // -h / --help: print usage and exit
};

// Throws vit::Error naming the offending argument (unknown flag, missing config, stray argument).
CliArgs parse_cli_args(const std::vector<std::string>& args, std::string_view program);
CliArgs parse_cli_args(int argc, const char* const* argv);  // argv[0] is the program

// The usage text for --help (with the config key reference appended by the caller if wanted).
std::string cli_usage(std::string_view program);

}  // namespace vit
