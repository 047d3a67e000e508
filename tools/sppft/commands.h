// The subcommands of `sppft`; each lives in tools/sppft/cmd_<name>.cpp and
// receives the arguments after its name.
#pragma once

#include <set>
#include <string>

namespace sppft::cli {
int cmd_info(int argc, char** argv);
int cmd_generate(int argc, char** argv);
int cmd_hidden(int argc, char** argv);
int cmd_train(int argc, char** argv);
int cmd_memory(int argc, char** argv);
int cmd_cossim(int argc, char** argv);
int cmd_locate(int argc, char** argv);
int cmd_eval(int argc, char** argv);
int cmd_rejudge(int argc, char** argv);
int cmd_demo(int argc, char** argv);
int cmd_profile(int argc, char** argv);
int cmd_launch(int argc, char** argv);
int cmd_data(int argc, char** argv);
int cmd_compare(int argc, char** argv);
int cmd_experiment(int argc, char** argv);

// The flags of `sppft train`; `sppft experiment` passes the fine-tuning ones through.
extern const std::set<std::string> kTrainValuedFlags, kTrainSwitches;
}  // namespace sppft::cli
