"""Leave-one-in layer ranking of the smoothed demo model (see docs/benchmarks/compare.md); paths are the benchmark's."""

import json
import os
import time

from sq_trt.artifacts import atomic_write_text, load_smoothed
from sq_trt.compare.dataloader import evaluation_slice
from sq_trt.compare.layers import rank_layers
from sq_trt.data import tokenize_chunks

t = time.time()
c0 = os.times()
loaded, scales = load_smoothed("/tmp/h6/smooth")
chunks = tokenize_chunks(loaded.tokenizer, evaluation_slice(), seq_len=256, max_chunks=1)
r = rank_layers(loaded.model, chunks, act_mode="per_token", progress=False)
c1 = os.times()
out = {"wall_s": time.time() - t, "cpu_s": (c1.user - c0.user) + (c1.system - c0.system), **r.to_json()}
atomic_write_text("bench/results/layers_demo.json", json.dumps(out, indent=2) + "\n")
print(out["wall_s"], out["kl_all_layers"], out["kl_sum_of_layers"])
for l in out["layers"][:8]:
    print(l["name"], round(l["kl_leave_one_in"], 5), round(l["output_error_ratio"], 4), l["suggestion"][:60])
