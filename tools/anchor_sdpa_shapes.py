"""PyTorch SDPA attention fwd and fwd+bwd (bf16, triton do_bench median, as ../shared/anchors/anchor_ops.py
measures the ViT-B/16 shape) at every d = 64 shape tools/bench_attention.cu times, so each of its rows has a
PyTorch number from the same device call. Run by tools/gpu_suite.sh's attn section."""
import torch
import torch.nn.functional as F
from triton.testing import do_bench

H, d = 12, 64
for name, B, T in [("ViT-B/16-224", 256, 197), ("ViT-B/14-224", 128, 257), ("ViT-B/16-320", 64, 401),
                   ("ViT-B/16-384", 32, 577)]:
    q, k, v = [torch.randn(B, H, T, d, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3)]
    g = torch.randn_like(q)
    fwd = do_bench(lambda: F.scaled_dot_product_attention(q, k, v), return_mode="median")
    fb = do_bench(lambda: torch.autograd.grad(F.scaled_dot_product_attention(q, k, v), (q, k, v), g),
                  return_mode="median")
    print(f"SDPA {name} B{B} H{H} T{T} d{d}: fwd {fwd * 1e3:.1f} us  fwd+bwd {fb * 1e3:.1f} us", flush=True)
