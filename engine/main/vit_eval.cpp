// vit_eval: evaluates a model on the validation split (the recipe's infer.py): the newest committed
// checkpoint under training.checkpoint.path (or the best by training.checkpoint.resume_from_metric), or
// the timm weights of model.init_from. Prints loss, top-1 and top-5 as one JSON line.
//   mpirun -np NGPU ./vit_eval configs/vit_base.toml training.checkpoint.path=./ckpts/vit data.val_path=...
#include "engine/main/program_main.h"

int main(int argc, char** argv) { return vit::program::main(argc, argv, "vit_eval", true); }
