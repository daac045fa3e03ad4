"""The benchmark's verdict and tables: the issue's targets, judged on a full run (`targets`), and the markdown report
(`markdown`) of a results dict as `cli.main` assembles it."""

from __future__ import annotations

import torch


def targets(results: dict) -> list[dict]:
    out = []

    def add(name, value, threshold, higher_is_better=True):
        if value is None:
            return
        met = value >= threshold if higher_is_better else value <= threshold
        out.append({"target": name, "value": round(value, 3), "threshold": threshold, "met": bool(met)})

    # The issue states its reference measurements and training targets at batch 4 x 512, the first training shape of
    # a full run; other shapes are reported, not judged. (A --quick run judges nothing: its shapes differ.)
    training = results.get("training", [])
    for row in training:
        if row["shape"] != training[0]["shape"]:
            continue
        if row["dropout"] == "paper" and row["dtype"] == "bf16":
            add(f"train bf16 paper dropout {row['shape']} ours/ref", row["ratio"], 1.6)
        if row["dropout"] == "paper" and row["dtype"] == "fp32":
            add(f"train fp32 paper dropout {row['shape']} ours/ref", row["ratio"], 1.25)
        if row["dropout"] == "attn_pdrop=0" and row["dtype"] == "bf16":
            add(f"train bf16 attn_pdrop=0 {row['shape']} ours/ref", row["ratio"], 1.8)
    for row in results.get("generation", []):
        if row["batch"] == 1:
            add(f"generate b1 fp32 ({row['new_tokens']} new) ours/ref", row["ratio_fp32"], 3.5)
            add(f"generate b1 bf16 weights ({row['new_tokens']} new) ours/ref fp32", row["ratio_bf16_weights"], 5.0)
            add("decode b1 fp32 / bandwidth floor", row.get("decode_vs_floor_fp32"), 1.5, higher_is_better=False)
            add("decode b1 bf16 / bandwidth floor", row.get("decode_vs_floor_bf16"), 1.5, higher_is_better=False)
    mem = {(r["which"], r["shape"]): r for r in results.get("memory", [])}
    for (which, shape), row in mem.items():
        if which == "ours" and ("reference", shape) in mem:
            add(
                f"peak RSS fp32 {shape} ours/ref",
                row["peak_rss_mb"] / mem[("reference", shape)]["peak_rss_mb"],
                0.75,
                False,
            )
    ckpt = results.get("checkpointing")
    if ckpt:
        add(f"grad checkpointing activation cut {ckpt['shape']}", ckpt.get("activation_cut"), 2.0)
        add(f"grad checkpointing extra step time {ckpt['shape']}", ckpt["extra_time"], 0.40, higher_is_better=False)
    return out


def markdown(results: dict) -> str:
    lines = []
    m = results["machine"]
    lines.append(
        f"Machine: {m['threads']} threads (load average at start {results.get('load_average', '?')}), GEMM {m['gemm_gflops_fp32']:.0f} GFLOP/s fp32 / {m['gemm_gflops_bf16']:.0f} "
        f"bf16, copy {m['copy_gbps']:.1f} GB/s (read+write), read {m['read_gbps']:.1f} GB/s; torch {torch.__version__}"
    )
    lines += [
        "",
        "| training | dtype | shape | reference tok/s | ours tok/s | ours/ref | ours/ref by CPU time | MFU ref | MFU ours | GEMM probe GFLOP/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results.get("training", []):
        lines.append(
            f"| {r['dropout']} | {r['dtype']} | {r['shape']} | {r['reference_tok_s']:.0f} | {r['ours_tok_s']:.0f} | "
            f"**{r['ratio']:.2f}×** | {r['ratio_cpu_time']:.2f}× | {r['reference_mfu']:.1%} | {r['ours_mfu']:.1%} | "
            f"{r['gemm_gflops_during']:.0f} |"
        )
    if results.get("ablation"):
        lines += ["", "| lever (ours, fp32, paper dropout) | shape | tok/s | vs eager |", "|---|---|---|---|"]
        for r in results["ablation"]:
            lines.append(f"| {r['variant']} | {r['shape']} | {r['tok_s']:.0f} | {r['speedup_vs_eager']:.2f}× |")
    for r in results.get("inference", []):
        lines += ["", f"| inference {r['shape']} | tok/s |", "|---|---|"]
        lines += [f"| {k[:-6]} | {v:.0f} |" for k, v in r.items() if k.endswith(" tok/s")]
        lines.append(f"| ours/ref fp32 · bf16 autocast | {r['ratio_fp32']:.2f}× · {r['ratio_bf16_autocast']:.2f}× |")
    if results.get("generation"):
        lines += [
            "",
            "| generation | ref fp32 (no cache) tok/s | ours fp32 tok/s | ours bf16 tok/s | ours/ref fp32 | ours bf16/ref | same tokens |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in results["generation"]:
            lines.append(
                f"| batch {r['batch']}, {r['prompt']}+{r['new_tokens']} | {r['reference fp32 (no cache) tok/s']:.1f} | "
                f"{r['ours fp32 tok/s']:.1f} | {r['ours bf16 weights tok/s']:.1f} | **{r['ratio_fp32']:.1f}×** | "
                f"**{r['ratio_bf16_weights']:.1f}×** | {r['same_tokens_fp32']} |"
            )
            if "decode_vs_floor_fp32" in r:
                lines.append(
                    f"| decode b1 ms/token (floor) | | {r['decode_ms_per_token_fp32']:.1f} ({r['decode_floor_ms_fp32']:.1f}) | "
                    f"{r['decode_ms_per_token_bf16']:.1f} ({r['decode_floor_ms_bf16']:.1f}) | "
                    f"{r['decode_vs_floor_fp32']:.2f}× floor | {r['decode_vs_floor_bf16']:.2f}× floor | |"
                )
                lines.append(
                    f"| (floor: weight bytes / {r['copy_gbps_during_decode']:.1f} GB/s, the copy bandwidth measured between the decode runs) | | | | | | |"
                )
                if "bf16_decode_kernels" in r:
                    lines.append(f"| (bf16 decode ran on: {r['bf16_decode_kernels']}) | | | | | | |")
    if results.get("memory"):
        lines += [
            "",
            "| memory (fresh process, fp32) | shape | peak RSS MB | static MB | activation peak MB | step s |",
            "|---|---|---|---|---|---|",
        ]
        for r in results["memory"]:
            act = f"{r['activation_peak_mb']:.0f}" if r["activation_peak_mb"] is not None else "n/a"
            lines.append(
                f"| {r['which']} | {r['shape']} | {r['peak_rss_mb']:.0f} | {r['static_rss_mb']:.0f} | {act} | {r['step_s']:.2f} |"
            )
    c = results.get("checkpointing")
    if c:
        cut = f"{c['activation_cut']:.1f}× less activation memory, " if "activation_cut" in c else ""
        lines += ["", f"Gradient checkpointing ({c['shape']} fp32): {cut}{c['extra_time']:+.0%} step time."]
    if results.get("allocators"):
        lines += ["", "| allocator (ours, bf16, own process) | step s | speedup | peak RSS MB |", "|---|---|---|---|"]
        for r in results["allocators"]:
            lines.append(f"| {r['allocator']} | {r['step_s']:.2f} | {r['speedup']:.2f}× | {r['peak_rss_mb']:.0f} |")
    if results.get("compile"):
        lines += ["", f"torch.compile: {results['compile']}"]
    if results.get("mode") == "quick":  # smaller shapes and 32 new tokens: ratios not comparable to the targets
        lines += ["", "Targets are judged on a full run only (the issue's shapes: 4x512 training, 128 new tokens)."]
        return "\n".join(lines)
    lines += ["", "| target | value | threshold | met |", "|---|---|---|---|"]
    for t in results.get("targets", []):
        lines.append(f"| {t['target']} | {t['value']} | {t['threshold']} | {'yes' if t['met'] else '**no**'} |")
    return "\n".join(lines)
