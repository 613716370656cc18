"""Loads an engine export (ckpt_tool export) into timm with strict=True and runs it once.
  python3 tools/check_export.py FILE.safetensors TIMM_MODEL_NAME NUM_CLASSES"""
import sys, torch, timm
from safetensors.torch import load_file

path, name, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
sd = load_file(path)
m = timm.create_model(name, pretrained=False, num_classes=k)
res = m.load_state_dict(sd, strict=True)
same = all(torch.equal(m.state_dict()[n].float(), t.float()) for n, t in sd.items())
with torch.no_grad():
    y = m.eval()(torch.randn(2, 3, 224, 224))
print(f"EXPORT {path}: timm {name} load_state_dict(strict=True) -> {res}; {len(sd)} tensors, values identical: {same}; "
      f"forward {tuple(y.shape)} finite: {bool(torch.isfinite(y).all())}", flush=True)
sys.exit(0 if same and torch.isfinite(y).all() else 1)
