"""The benchmark's sections, one function each: each returns the rows (or the dict) the report shows for it. Memory
and allocators run in fresh processes (`subprocesses`). `cfg` holds the sizes of a quick or a full run (`cli.QUICK`,
`cli.FULL`)."""

from __future__ import annotations

import gc
import platform
from pathlib import Path

import torch

from ..cpu_speed import GPT1_ATTENTION, cpu_kernels, enable_cpu_speedups
from ..kernels import unavailable_reason
from .models import (
    NO_ATTN_DROPOUT,
    PAPER_DROPOUT,
    autocast,
    build_pair,
    decode_weight_bytes,
    make_train_step,
    train_flops_per_token,
)
from .subprocesses import run_child
from .timing import CPU_TIMES, copy_bandwidth_probe, gemm_probe, interleaved, log, median

PROMPT = 32  # tokens of the generation prompt


def bench_machine(quick: bool) -> dict:
    """GEMM GFLOP/s (the MFU denominators) and memory bandwidth (the decode floor), measured now, on this machine."""
    out = {"threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine()}
    repeats = 3 if quick else 7
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        best = 0.0
        for m, k, n in ((2048, 768, 3072), (2048, 3072, 768), (2048, 2048, 2048)):
            a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
            t = min(interleaved({"mm": lambda: torch.mm(a, b)}, 2, repeats)["mm"])  # a peak: the best run
            best = max(best, 2 * m * k * n / t / 1e9)
        out[f"gemm_gflops_{name}"] = best
    copy = copy_bandwidth_probe(64 if quick else 128, copies=1)
    src = torch.ones((64 if quick else 128) * 2**20 // 4)
    times = interleaved({"copy": copy, "read": lambda: src.sum()}, 2, repeats)
    out["copy_gbps"] = copy.gbps(min(times["copy"]))  # best run; the decode floor re-measures it between decode runs
    out["read_gbps"] = src.numel() * 4 / min(times["read"]) / 1e9
    return out


def bench_training(cfg: dict, machine: dict) -> list[dict]:
    rows = []
    configs = [("paper", PAPER_DROPOUT, dtype) for dtype in ("fp32", "bf16")]
    configs += [("attn_pdrop=0", NO_ATTN_DROPOUT, dtype) for dtype in cfg["attn0_dtypes"]]
    for name, dropout, dtype in configs:
        ours, reference = build_pair(dropout)
        for batch, seq in cfg["train_shapes"] if name == "paper" else cfg["train_shapes"][:1]:
            log(f"training {name} {dtype} {batch}x{seq} ...")
            steps = {
                "reference": make_train_step(reference, batch, seq, dtype),
                "ours": make_train_step(ours, batch, seq, dtype),
            }
            steps["gemm probe"] = gemm_probe(dtype)  # what the GEMMs ran at while these steps ran (the VM drifts)
            times = interleaved(steps, cfg["train_warmup"], cfg["train_steps"])
            tokens = batch * seq
            flops = train_flops_per_token(ours.config, seq)
            peak = machine[f"gemm_gflops_{dtype}"] * 1e9
            row = {"dropout": name, "dtype": dtype, "shape": f"{batch}x{seq}"}
            for side in ("reference", "ours"):
                tps = tokens / median(times[side])
                row[f"{side}_tok_s"] = tps
                row[f"{side}_mfu"] = tps * flops / peak
            row["ratio"] = row["ours_tok_s"] / row["reference_tok_s"]
            row["gemm_gflops_during"] = steps["gemm probe"].gflops(median(times["gemm probe"]))
            row["cpu_s_per_step"] = {side: median(CPU_TIMES[side]) for side in ("reference", "ours")}
            row["ratio_cpu_time"] = row["cpu_s_per_step"]["reference"] / row["cpu_s_per_step"]["ours"]
            rows.append(row)
            log(f"  {row}")
            del steps
            gc.collect()
        del ours, reference
        gc.collect()
    return rows


def bench_ablation(cfg: dict) -> list[dict]:
    """Each lever on the same model and weights (fp32, paper dropout), interleaved step by step."""
    batch, seq = cfg["train_shapes"][0]
    ours, _ = build_pair(PAPER_DROPOUT)
    step = make_train_step(ours, batch, seq, "fp32")
    variants = {
        "eager attention + nn.Dropout": ("eager", False),
        "sdpa + nn.Dropout": ("sdpa", False),
        "gpt1_fused + nn.Dropout": (GPT1_ATTENTION, False),
        "gpt1_fused + GPT1Dropout (default)": (GPT1_ATTENTION, True),
    }

    def variant(attn, fast):
        def run():
            enable_cpu_speedups(ours, attention=False, dropout=fast)  # the public switch, GPT1Dropout on or off
            ours.set_attn_implementation(attn)
            step()

        return run

    log(f"lever ablation fp32 {batch}x{seq} ...")
    times = interleaved({k: variant(*v) for k, v in variants.items()}, 1, max(3, cfg["train_steps"] - 1))
    enable_cpu_speedups(ours)
    base = median(times["eager attention + nn.Dropout"])
    return [
        {
            "variant": k,
            "shape": f"{batch}x{seq}",
            "tok_s": batch * seq / median(v),
            "speedup_vs_eager": base / median(v),
        }
        for k, v in times.items()
    ]


def bench_inference(cfg: dict) -> list[dict]:
    ours, reference = build_pair(PAPER_DROPOUT)
    ours.eval(), reference.eval()
    ours_bf16 = build_pair(PAPER_DROPOUT)[0].to(torch.bfloat16).eval()
    rows = []
    for batch, seq in cfg["infer_shapes"]:
        ids = torch.randint(0, 40478, (batch, seq), generator=torch.Generator().manual_seed(0))

        def fwd(model, dtype):
            def run():
                with torch.inference_mode(), autocast(dtype):
                    model(input_ids=ids)

            return run

        log(f"inference {batch}x{seq} ...")
        fns = {
            "reference fp32": fwd(reference, "fp32"),
            "ours fp32": fwd(ours, "fp32"),
            "reference bf16 autocast": fwd(reference, "bf16"),
            "ours bf16 autocast": fwd(ours, "bf16"),
            "ours bf16 weights": fwd(ours_bf16, "fp32"),
        }
        times = interleaved(fns, 1, cfg["infer_steps"])
        tps = {k: batch * seq / median(v) for k, v in times.items()}
        rows.append(
            {
                "shape": f"{batch}x{seq}",
                **{f"{k} tok/s": v for k, v in tps.items()},
                "ratio_fp32": tps["ours fp32"] / tps["reference fp32"],
                "ratio_bf16_autocast": tps["ours bf16 autocast"] / tps["reference bf16 autocast"],
                "ratio_bf16_weights_vs_ref_bf16_autocast": tps["ours bf16 weights"] / tps["reference bf16 autocast"],
            }
        )
    return rows


def bench_generation(cfg: dict) -> list[dict]:
    """Greedy, `gen_new` new tokens after a 32-token prompt. Reference: no KV cache (its only mode). Ours: cache."""
    ours, reference = build_pair(PAPER_DROPOUT)
    ours.eval(), reference.eval()
    ours_bf16 = build_pair(PAPER_DROPOUT)[0].to(torch.bfloat16).eval()
    # Batch-1 bf16 decoding uses hf-gpt1's compiled one-row product and fused block where they can run
    # (hf_gpt1/kernels): resolve (and if needed build) them now, outside the timed runs, and record what ran.
    bf16_gemv = (
        "hf_gpt1::bf16_addmv + decode_block" if cpu_kernels() else f"torch addmv + operators ({unavailable_reason()})"
    )
    new = cfg["gen_new"]
    rows = []
    for batch in cfg["gen_batches"]:
        prompt = torch.randint(0, 40478, (batch, PROMPT), generator=torch.Generator().manual_seed(batch))

        def gen(model, tokens, use_cache=True):
            def run():
                with torch.inference_mode():
                    run.out = model.generate(
                        prompt,
                        max_new_tokens=tokens,
                        min_new_tokens=tokens,
                        do_sample=False,
                        pad_token_id=0,
                        eos_token_id=None,
                        use_cache=use_cache,
                    )

            return run

        log(f"generation batch {batch}, {new} new tokens ...")
        fns = {
            "reference fp32 (no cache)": gen(reference, new, use_cache=False),
            "ours fp32": gen(ours, new),
            "ours bf16 weights": gen(ours_bf16, new),
        }
        if batch == 1:  # decode-only time per token = (t(new) - t(1)) / (new - 1)
            fns["ours fp32 prefill"] = gen(ours, 1)
            fns["ours bf16 prefill"] = gen(ours_bf16, 1)
            # The floor's copy bandwidth, measured between the decode runs: this VM's memory bandwidth drifts by up
            # to 2x within a run (22 GB/s at the start of one run, 10-13 GB/s twenty minutes later), so a floor from
            # the start of the run would judge decoding against a machine it did not run on.
            fns["copy (floor)"] = copy_bandwidth_probe(cfg["copy_mb"])
        times = interleaved(fns, 1 if batch == 1 else 0, cfg["gen_repeats"])
        row = {"batch": batch, "new_tokens": new, "prompt": PROMPT, "bf16_decode_kernels": bf16_gemv}
        for name in ("reference fp32 (no cache)", "ours fp32", "ours bf16 weights"):
            row[f"{name} tok/s"] = batch * new / median(times[name])
        row["same_tokens_fp32"] = bool(torch.equal(fns["reference fp32 (no cache)"].out, fns["ours fp32"].out))
        ref = row["reference fp32 (no cache) tok/s"]
        row["ratio_fp32"] = row["ours fp32 tok/s"] / ref
        row["ratio_bf16_weights"] = row["ours bf16 weights tok/s"] / ref
        if batch == 1:
            copy_gbps = fns["copy (floor)"].gbps(median(times["copy (floor)"]))
            row["copy_gbps_during_decode"] = copy_gbps
            for tag, model, prefill in (("fp32", ours, "ours fp32 prefill"), ("bf16", ours_bf16, "ours bf16 prefill")):
                full = "ours fp32" if tag == "fp32" else "ours bf16 weights"
                per_token = (median(times[full]) - median(times[prefill])) / (new - 1)
                floor = decode_weight_bytes(model) / (copy_gbps * 1e9)
                row[f"decode_ms_per_token_{tag}"] = per_token * 1e3
                row[f"decode_floor_ms_{tag}"] = floor * 1e3
                row[f"decode_vs_floor_{tag}"] = per_token / floor
        rows.append(row)
        log(f"  {row}")
    return rows


def bench_memory(cfg: dict) -> list[dict]:
    rows = []
    for batch, seq in cfg["mem_shapes"]:
        for which in ("reference", "ours", "ours_gc"):
            log(f"memory {which} fp32 {batch}x{seq} (subprocess) ...")
            rows.append(run_child(["memory", which, "fp32", str(batch), str(seq), str(cfg["mem_steps"])]))
            log(f"  {rows[-1]}")
    return rows


def bench_checkpointing(cfg: dict, memory_rows: list[dict]) -> dict:
    batch, seq = cfg["gc_shape"]
    ours, _ = build_pair(PAPER_DROPOUT)
    step = make_train_step(ours, batch, seq, "fp32")

    def with_gc(enabled):
        def run():
            if enabled:
                ours.activation_checkpointing_enable()
            else:
                ours.activation_checkpointing_disable()
            step()

        return run

    log(f"gradient checkpointing time fp32 {batch}x{seq} ...")
    times = interleaved({"off": with_gc(False), "on": with_gc(True)}, 1, cfg["gc_steps"])
    out = {"shape": f"{batch}x{seq}", "step_s_off": median(times["off"]), "step_s_on": median(times["on"])}
    out["extra_time"] = out["step_s_on"] / out["step_s_off"] - 1
    mem = {r["which"]: r for r in memory_rows if r["shape"] == out["shape"]}
    if "ours" in mem and "ours_gc" in mem and mem["ours_gc"]["activation_peak_mb"]:
        out["activation_mb_off"] = mem["ours"]["activation_peak_mb"]
        out["activation_mb_on"] = mem["ours_gc"]["activation_peak_mb"]
        out["activation_cut"] = out["activation_mb_off"] / out["activation_mb_on"]
    return out


def bench_allocators(cfg: dict) -> list[dict]:
    """Opt-in allocator settings, each in its own process (they act at process start); bf16 autocast, paper dropout."""
    batch, seq = cfg["train_shapes"][0]
    variants = {"glibc default": {}}
    variants["glibc MALLOC_* tunables"] = {
        "MALLOC_MMAP_THRESHOLD_": str(1 << 30),  # keep big tensors on the heap: freed pages are reused, not unmapped
        "MALLOC_TRIM_THRESHOLD_": str(1 << 34),  # and never handed back to the OS between steps
        "MALLOC_TOP_PAD_": str(1 << 28),
    }
    jemalloc = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
    if Path(jemalloc).exists():
        variants["jemalloc (LD_PRELOAD)"] = {
            "LD_PRELOAD": jemalloc,
            "MALLOC_CONF": "background_thread:true,dirty_decay_ms:-1,muzzy_decay_ms:-1",
        }
    # PyTorch's own switch: CPU tensors of 2 MB and more are 2 MB-aligned and madvise(MADV_HUGEPAGE)d, so with the
    # kernel's transparent huge pages in `madvise` mode (this machine) a fresh tensor costs one fault per 2 MB, not 512.
    variants["PyTorch THP_MEM_ALLOC_ENABLE=1"] = {"THP_MEM_ALLOC_ENABLE": "1"}
    results = {name: [] for name in variants}
    for _ in range(2):  # alternate processes to spread machine noise
        for name, env in variants.items():
            log(f"allocator {name} (subprocess) ...")
            results[name].append(run_child(["speed", "ours", "bf16", str(batch), str(seq), "3"], env))
    base = median([r["step_s"] for r in results["glibc default"]])
    rows = []
    for name, runs in results.items():
        step_s = median([r["step_s"] for r in runs])
        rows.append(
            {
                "allocator": name,
                "shape": f"{batch}x{seq}",
                "step_s": step_s,
                "speedup": base / step_s,
                "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
                "env": variants[name],
            }
        )
    return rows


def bench_compile(cfg: dict) -> dict:
    batch, seq = cfg["train_shapes"][0]
    ours, _ = build_pair(PAPER_DROPOUT)
    eager_step = make_train_step(ours, batch, seq, "bf16")
    try:
        compiled = torch.compile(ours)
        step = make_train_step(compiled, batch, seq, "bf16")
        step()  # compile
    except Exception as error:  # noqa: BLE001 - optional lever, report and fall back
        return {"compiled": False, "error": f"{type(error).__name__}: {str(error)[:300]}"}
    times = interleaved({"eager": eager_step, "compiled": step}, 1, cfg["train_steps"])
    return {"compiled": True, "shape": f"{batch}x{seq}", "speedup": median(times["eager"]) / median(times["compiled"])}
