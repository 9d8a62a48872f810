"""Print the performance model's predictions next to the published figures of
../shared/calibration/README.md, as the markdown tables in docs/performance-model.md.

    .venv/bin/python bench/calibration.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference_pods.performance import ReplicaModel
from inference_pods.profiles import GPUS
from tests.unit.test_performance_model import LLAMA2_70B, SATURATION_SETUPS, saturation_rows


def pct(predicted: float, published: float) -> str:
    return f"{100 * (predicted / published - 1):+.0f}%"


def main() -> None:
    print("| ISL/OSL | " + " | ".join(f"{m} TP{tp}: model / published" for m, tp in SATURATION_SETUPS) + " |")
    print("|---|" + "---:|" * len(SATURATION_SETUPS))
    table: dict[tuple[int, int], dict[str, str]] = {}
    worst = 0.0
    for isl, osl, model, tp, published in saturation_rows():
        replica = ReplicaModel.for_profiles(model, "H100-SXM", precision="fp8", tp=tp, max_batch_size=2048,
                                            max_num_tokens=8192, kv_cache_fraction=0.95)
        predicted = replica.saturation_throughput(isl, osl)
        worst = max(worst, abs(predicted / published - 1))
        table.setdefault((isl, osl), {})[model] = f"{predicted:,.0f} / {published:,} ({pct(predicted, published)})"
    for (isl, osl), cells in table.items():
        print(f"| {isl}/{osl} | " + " | ".join(cells.get(m, "—") for m, _ in SATURATION_SETUPS) + " |")
    print(f"\nLargest deviation: {100 * worst:.0f}%\n")

    measured = {2: (83.8, 310, 1340, 37.0, 42.0, 52.3), 4: (59.6, 201, 954, 29.7, 32.8, 36.9),
                8: (53.4, 137, 845, 29.8, 34.2, 38.6)}
    labels = ("Prefill 512", "Prefill 2048", "Prefill 8192", "Decode b1", "Decode b16", "Decode b32")
    print("| Llama-2-70B FP16, H100, ms | " + " | ".join(f"TP{tp}: model / published" for tp in measured) + " |")
    print("|---|" + "---:|" * len(measured))
    rows: list[list[str]] = [[label] for label in labels]
    for tp, published in measured.items():
        replica = ReplicaModel(LLAMA2_70B, GPUS["H100-SXM"], precision="fp16", tp=tp)
        predicted = (replica.prefill_seconds(512), replica.prefill_seconds(2048), replica.prefill_seconds(8192),
                     replica.decode_seconds(1, 512), replica.decode_seconds(16, 512), replica.decode_seconds(32, 512))
        for row, p, m in zip(rows, predicted, published, strict=True):
            row.append(f"{p * 1e3:.1f} / {m} ({pct(p * 1e3, m)})")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
