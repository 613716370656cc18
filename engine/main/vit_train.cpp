// vit_train: placeholder until the trainer lands (engine/trainer.*).
#include <cstdio>
int main() { std::puts("vit_train: trainer not built yet"); return 1; }
