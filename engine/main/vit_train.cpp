// vit_train: trains a ViT from a TOML config plus dotted overrides, on the GPUs when there are any
// (one rank per GPU under mpirun), else on the CPU backend.
//   mpirun -np NGPU ./vit_train configs/vit_base.toml training.checkpoint.path=./ckpts/vit
#include "engine/main/program_main.h"

int main(int argc, char** argv) { return vit::program::main(argc, argv, "vit_train", false); }
