"""Python baseline: read every tensor of the given safetensors files with
safetensors.safe_open(framework="np"), keeping all arrays alive (an owned copy of everything).
ml_dtypes registers bfloat16 with numpy; without it BF16 tensors cannot be read at all.
Prints one JSON object."""
import json
import sys
import time

t0 = time.perf_counter()
import ml_dtypes  # noqa: F401  (registers bfloat16)
from safetensors import safe_open

t1 = time.perf_counter()
arrays = {}
for path in sys.argv[1:]:
    with safe_open(path, framework="np") as f:
        for name in f.keys():
            arrays[name] = f.get_tensor(name)
t2 = time.perf_counter()
print(json.dumps({
    "secs": t2 - t1,
    "import_secs": t1 - t0,
    "tensors": len(arrays),
    "bytes": sum(a.nbytes for a in arrays.values()),
}))
