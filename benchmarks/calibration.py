"""Calibration: is detect_frame's p_value a valid p-value on images without the mark?

    python benchmarks/calibration.py [--trials 10000] [--key-trials 1000] [--attacks NAME...]
                                     [--candidates 16] [--max-side 1920] [--workers 2]
                                     [--frames PATH...] [--out DIR] [--seed 0]

Part 1 (unmarked): every image x each --attacks x R regions, R = ceil(--trials / (images x
attacks)); region 0 is the whole attacked frame, the others random crops of 25..100 % of
its area at random offsets. Every trial draws its own studio key (32 bytes) and registry
of --candidates random delivery ids from a generator seeded by (seed, image, attack,
region), and traces the region with ``detect_frame(..., candidates=)``.
Part 2 (wrong key): every image x each --attacks x R' trials (R' = ceil(--key-trials /
(images x attacks))): a random key A and registry, the image marked under A with one of
the registered ids, attacked, region 0 whole and the others random crops, traced under a
random key B with the same registry.

Under "no mark of this key" a valid p-value satisfies P(p <= a) <= a. The detector's
p_value is a union bound over ``n_tests`` hypotheses, so it should sit at or below the line
y = x. Reported per part: verdicts (must be 0), the fraction of trials with p_value <= a
and with p_mark <= a for a = 1e-2 and 1e-3, and the score's mean / sd / max.
Exit code 1 if any verdict, or if a fraction exceeds a by more than 3 binomial standard
errors (sqrt(a (1 - a) / trials)); 0 otherwise.

Frames with a side longer than --max-side are downscaled (INTER_AREA) before the attacks,
to bound the run time; the output says which.
Writes OUT/calibration.json (every trial) and OUT/calibration.png (needs matplotlib, the
``bench`` extra; without it the plot is skipped with a note on stderr).
"""

from __future__ import annotations

import os

# One BLAS/OpenMP thread per worker process, set before numpy and cv2 are imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import dataclasses
import importlib.util
import math
import sys
import time
from pathlib import Path

import _common as common
import numpy as np
import scipy.special

from watermark import apply_attack, attack_names, detect_frame, embed_frame
from watermark._attacks import crop, rescale

BASE_ATTACKS = (
    "none",
    "jpeg50",
    "scale0.5",
    "scale0.75",
    "crop50",
    "blur1",
    "noise5",
    "screenshot",
    "social",
)
VIDEO_ATTACK = "h264crf28"  # added to the defaults when PyAV is installed
LEVELS = (1e-2, 1e-3)
N_SE = 3.0  # tolerance of the empirical fraction above a, in binomial standard errors
MIN_CROP_AREA = 0.25
PART_LABELS = {"unmarked": "unmarked", "wrong_key": "marked key A, traced key B"}


@dataclasses.dataclass(frozen=True, slots=True)
class Task:
    """All trials of one (image, attack) pair: the image is decoded once per task."""

    name: str
    path: str
    attack: str
    unmarked: int
    wrong_key: int
    candidates: int
    max_side: int
    seed: int


def _load(task: Task) -> np.ndarray:
    image = common.read_image(Path(task.path))
    longest = max(image.shape[:2])
    if longest > task.max_side:
        image = rescale(image, task.max_side / longest)
    return image


def _region(attacked: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    if k == 0:
        return attacked, "full"
    area = float(rng.uniform(MIN_CROP_AREA, 1.0))
    return crop(attacked, area, rng=rng), f"crop{area:.3f}"


def _record(part: str, task: Task, k: int, region: str, leak: np.ndarray, det) -> dict:
    return {
        "part": part,
        "frame": task.name,
        "attack": task.attack,
        "trial": k,
        "region": region,
        "leak_hw": list(leak.shape[:2]),
        "found": bool(det.found),
        "p_value": float(det.p_value),
        "p_mark": float(det.p_mark),
        "score": float(det.score),
        "n_tests": float(det.n_tests),
        "chip_px": float(det.chip_px),
    }


def run_pair(task: Task) -> list[dict]:
    """Part 1 and part 2 trials of one (image, attack)."""
    image = _load(task)
    out = []
    # Part 1: the attack once, then the whole frame and random crops, each its own key.
    attacked = apply_attack(
        task.attack, image, seed=common.stable_seed(task.seed, task.name, task.attack)
    )
    for k in range(task.unmarked):
        rng = np.random.default_rng(
            common.stable_seed(task.seed, task.name, task.attack, k, "unmarked")
        )
        key = rng.bytes(32)
        cands = common.distinct_payloads(rng, task.candidates)
        leak, region = _region(attacked, k, rng)
        det = detect_frame(leak, key, candidates=cands)
        out.append(_record("unmarked", task, k, region, leak, det))
    # Part 2: marked under a random key A with a registered id, traced under key B.
    for k in range(task.wrong_key):
        rng = np.random.default_rng(
            common.stable_seed(task.seed, task.name, task.attack, k, "wrong_key")
        )
        key_a, key_b = rng.bytes(32), rng.bytes(32)
        cands = common.distinct_payloads(rng, task.candidates)
        truth = int(cands[rng.integers(len(cands))])
        marked = embed_frame(image, key_a, truth).image
        attacked_b = apply_attack(
            task.attack, marked, seed=common.stable_seed(task.seed, task.name, task.attack, k)
        )
        leak, region = _region(attacked_b, k, rng)
        det = detect_frame(leak, key_b, candidates=cands)
        out.append(_record("wrong_key", task, k, region, leak, det))
    return out


# ----------------------------------------------------------------------------- statistics


def tolerance(a: float, n: int) -> float:
    """Largest fraction of n trials at p <= a still accepted: a + 3 binomial SE."""
    return a + N_SE * math.sqrt(a * (1.0 - a) / n)


def summarise(records: list[dict]) -> dict:
    """Trials, verdicts, tail fractions of p_value and p_mark with their limits, scores."""
    n = len(records)
    doc: dict = {"trials": n, "verdicts": int(sum(r["found"] for r in records))}
    if not n:
        return doc
    z = np.array([r["score"] for r in records])
    n_tests = np.array([r["n_tests"] for r in records])
    doc["levels"] = {}
    doc["exceeds"] = []
    for a in LEVELS:
        lim = tolerance(a, n)
        level = {"limit": lim}
        for field in ("p_value", "p_mark"):
            p = np.array([r[field] for r in records])
            count = int(np.sum(p <= a))
            level[field] = {"count": count, "fraction": count / n}
            if count / n > lim:
                doc["exceeds"].append(f"{field} <= {a:g}: {count}/{n} > {lim:.4g}")
        doc["levels"][f"{a:g}"] = level
    for field in ("p_value", "p_mark"):
        p = np.array([r[field] for r in records])
        doc[f"{field}_min"] = float(p.min())
        doc[f"{field}_median"] = float(np.median(p))
    doc["score_mean"], doc["score_sd"] = float(z.mean()), float(z.std(ddof=1) if n > 1 else 0.0)
    doc["score_max"] = float(z.max())
    doc["n_tests_min"], doc["n_tests_median"] = float(n_tests.min()), float(np.median(n_tests))
    doc["n_tests_max"] = float(n_tests.max())
    return doc


def max_normal_pdf(z: np.ndarray, n_tests: np.ndarray) -> np.ndarray:
    """Density of the max of n independent N(0, 1), averaged over the trials' n values.

    ``f_n(z) = n phi(z) Phi(z)^(n - 1)``, computed in logs (n is ~1e6 here).
    """
    values, counts = np.unique(n_tests, return_counts=True)
    log_phi = -0.5 * z**2 - 0.5 * math.log(2 * math.pi)
    log_cdf = scipy.special.log_ndtr(z)
    dens = np.zeros_like(z)
    for n, c in zip(values, counts, strict=True):
        dens += c * np.exp(math.log(n) + log_phi + (n - 1) * log_cdf)
    return dens / counts.sum()


def plot(records: list[dict], path: Path) -> bool:
    """Two panels: empirical P(p <= a) against y = a, and the score histogram."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 5), constrained_layout=True)
    a = np.logspace(-6, 0, 241)
    ax1.loglog(a, a, "k--", lw=1, label="y = a (analytic bound: P(p <= a) <= a)")
    styles = {"unmarked": "-", "wrong_key": ":"}
    for part, style in styles.items():
        rs = [r for r in records if r["part"] == part]
        if not rs:
            continue
        n = len(rs)
        for field, colour in (("p_value", "tab:blue"), ("p_mark", "tab:orange")):
            p = np.sort([r[field] for r in rs])
            frac = np.searchsorted(p, a, side="right") / n
            shown = np.where(frac > 0, frac, np.nan)  # zero cannot be drawn on a log axis
            ax1.step(
                a,
                shown,
                style,
                color=colour,
                where="post",
                label=f"{field}, {PART_LABELS[part]} (n = {n})",
            )
    n_un = sum(r["part"] == "unmarked" for r in records)
    if n_un:
        ax1.loglog(
            a,
            a + N_SE * np.sqrt(a * (1 - a) / n_un),
            color="grey",
            lw=0.8,
            label=f"a + {N_SE:g} SE (n = {n_un}): exit-1 limit",
        )
        ax1.axhline(
            1 / n_un,
            color="grey",
            lw=0.5,
            ls="-.",
            label="1 / n: resolution (0 trials below it are not drawn)",
        )
    ax1.set(
        xlim=(1e-6, 1),
        ylim=(1e-6, 1.5),
        xlabel="a",
        ylabel="fraction of trials with p <= a",
        title="Empirical CDF of p-values on images without the key's mark",
    )
    ax1.legend(fontsize=7, loc="upper left")

    rs = [r for r in records if r["part"] == "unmarked"] or records
    z = np.array([r["score"] for r in rs])
    n_tests = np.array([r["n_tests"] for r in rs])
    ax2.hist(z, bins=60, density=True, alpha=0.6, label=f"empirical score (n = {len(z)})")
    grid = np.linspace(min(z.min(), 0.0), max(z.max(), 7.0), 400)
    ax2.plot(
        grid,
        max_normal_pdf(grid, n_tests),
        "k-",
        lw=1.2,
        label=f"max of n_tests independent N(0, 1), n_tests ~ {np.median(n_tests):.3g}",
    )
    ax2.set(
        xlabel="score (normalised correlation of the best hypothesis)",
        ylabel="density",
        title="Score on unmarked trials vs max of independent normals\n"
        "(the hypotheses are NOT independent: a reference, not a fit)",
    )
    ax2.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# ----------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_common_args(parser)
    has_av = importlib.util.find_spec("av") is not None
    default_attacks = [*BASE_ATTACKS, *([VIDEO_ATTACK] if has_av else [])]
    parser.add_argument(
        "--attacks",
        nargs="+",
        default=default_attacks,
        metavar="NAME",
        help=f"attacks for both parts (default: {' '.join(BASE_ATTACKS)}, plus {VIDEO_ATTACK} "
        "when PyAV is installed)",
    )
    parser.add_argument("--trials", type=int, default=10_000, help="unmarked trials (10000)")
    parser.add_argument("--key-trials", type=int, default=1_000, help="wrong-key trials (1000)")
    parser.add_argument("--candidates", type=int, default=16, help="registry size (16)")
    parser.add_argument(
        "--max-side", type=int, default=1920, help="downscale longer frames to this side (1920)"
    )
    parser.add_argument("--workers", type=int, default=2, help="worker processes (2)")
    args = parser.parse_args()
    known = attack_names()
    bad = [a for a in args.attacks if a not in known]
    if bad:
        parser.error(f"--attacks: unknown attack(s) {bad}; choose from {list(known)}")
    if VIDEO_ATTACK in args.attacks and not has_av:
        parser.error(f"--attacks: {VIDEO_ATTACK} needs PyAV (pip install av)")
    if args.trials < 1 or args.key_trials < 0:
        parser.error(
            f"--trials must be >= 1 and --key-trials >= 0; got {args.trials}, {args.key_trials}"
        )
    if not 1 <= args.candidates <= 100_000:
        parser.error(f"--candidates must be in 1..100000; got {args.candidates}")
    if args.max_side < 64:
        parser.error(f"--max-side must be >= 64; got {args.max_side}")
    if args.workers < 1:
        parser.error(f"--workers must be >= 1; got {args.workers}")

    infos = common.frame_infos(args.frames)
    pairs = len(infos) * len(args.attacks)
    per_pair = math.ceil(args.trials / pairs)
    per_pair_key = math.ceil(args.key_trials / pairs)
    downscaled = [f.name for f in infos if max(f.height, f.width) > args.max_side]
    tasks = [
        Task(
            f"{f.name}/{attack}",
            str(f.path),
            attack,
            per_pair,
            per_pair_key,
            args.candidates,
            args.max_side,
            args.seed,
        )
        for f in sorted(infos, key=lambda f: -f.height * f.width)  # big first: even load
        for attack in args.attacks
    ]
    if not has_av:
        print(f"note: PyAV not installed, {VIDEO_ATTACK} left out", file=sys.stderr)
    print(
        f"calibration: {len(tasks)} (image, attack) pairs x {per_pair} unmarked + "
        f"{per_pair_key} wrong-key trials",
        file=sys.stderr,
    )
    t0 = time.perf_counter()
    per_task = common.run_tasks(run_pair, tasks, workers=args.workers, label="calibration")
    wall = time.perf_counter() - t0
    records = [r for rs in per_task for r in rs]
    for r in records:  # task names carry the attack; keep the image name alone
        r["frame"] = r["frame"].rsplit("/", 1)[0]
    parts = {p: [r for r in records if r["part"] == p] for p in PART_LABELS}
    summary = {p: summarise(rs) for p, rs in parts.items()}
    verdicts = sum(s["verdicts"] for s in summary.values())
    exceeds = [f"{p}: {e}" for p, s in summary.items() for e in s.get("exceeds", [])]
    by_attack = {
        a: summarise([r for r in parts["unmarked"] if r["attack"] == a]) for a in args.attacks
    }

    png = args.out / "calibration.png"
    plotted = plot(records, png)
    doc = {
        "benchmark": "calibration",
        "keys": "a random 32-byte key per trial (and key A / key B per wrong-key trial), "
        "drawn from np.random.default_rng(stable_seed(seed, image, attack, trial, part))",
        "attacks": list(args.attacks),
        "candidates": args.candidates,
        "regions_per_pair": {"unmarked": per_pair, "wrong_key": per_pair_key},
        "max_side": args.max_side,
        "downscaled_frames": downscaled,
        "seed": args.seed,
        "levels": list(LEVELS),
        "tolerance": f"a + {N_SE:g} * sqrt(a (1 - a) / trials)",
        "wall_s": wall,
        "plot": str(png) if plotted else None,
        "summary": {**summary, "verdicts": verdicts, "exceeds": exceeds},
        "by_attack_unmarked": by_attack,
        "trials": records,
        "machine": common.machine_info(),
    }
    json_path = common.write_json(args.out, "calibration.json", doc)

    print(
        f"## Calibration: {len(infos)} images x {len(args.attacks)} attacks, "
        f"{args.candidates} candidates, a random key per trial\n"
    )
    if downscaled:
        print(f"Frames longer than {args.max_side} px downscaled first: {', '.join(downscaled)}\n")
    headers = ["part", "trials", "verdicts"]
    for a in LEVELS:
        headers += [f"p_value <= {a:g}", f"p_mark <= {a:g}", f"limit {a:g}"]
    headers += ["min p_value", "min p_mark", "score mean", "score sd", "score max"]
    rows = []
    for part, s in summary.items():
        if not s["trials"]:
            continue
        row = [PART_LABELS[part], s["trials"], s["verdicts"]]
        for a in LEVELS:
            lv = s["levels"][f"{a:g}"]
            row += [_count(lv["p_value"]), _count(lv["p_mark"]), f"{100 * lv['limit']:.3f} %"]
        row += [common.fmt(s["p_value_min"], ".2e"), common.fmt(s["p_mark_min"], ".2e")]
        row += [common.fmt(s["score_mean"]), common.fmt(s["score_sd"]), common.fmt(s["score_max"])]
        rows.append(row)
    print(common.markdown_table(headers, rows))
    print("\nUnmarked trials by attack:\n")
    rows = [
        [
            a,
            s["trials"],
            s["verdicts"],
            _count(s["levels"]["0.01"]["p_value"]),
            _count(s["levels"]["0.01"]["p_mark"]),
            common.fmt(s["p_value_min"], ".2e"),
            common.fmt(s["score_mean"]),
            common.fmt(s["score_max"]),
        ]
        for a, s in by_attack.items()
        if s["trials"]
    ]
    print(
        common.markdown_table(
            [
                "attack",
                "trials",
                "verdicts",
                "p_value <= 0.01",
                "p_mark <= 0.01",
                "min p_value",
                "score mean",
                "score max",
            ],
            rows,
        )
    )
    s = summary["unmarked"]
    print(
        f"\nThe p_value is a union bound over n_tests hypotheses (median {s['n_tests_median']:.3g}"
        f"), so P(p <= a) <= a; the limit is a + {N_SE:g} binomial SE.\n"
        f"Total verdicts: {verdicts} (must be 0); fractions over the limit: "
        f"{'; '.join(exceeds) or 'none'}.\n"
        f"Wall {wall:.0f} s with {args.workers} worker(s). JSON: {json_path}\n"
        f"Plot: {png if plotted else 'skipped (matplotlib not installed: pip install matplotlib)'}"
    )
    if not plotted:
        print("note: matplotlib not installed, plot skipped (data in the JSON)", file=sys.stderr)
    if verdicts or exceeds:
        print(f"error: {verdicts} verdict(s); over the limit: {exceeds or 'none'}", file=sys.stderr)
        return 1
    return 0


def _count(level: dict) -> str:
    return f"{level['count']} ({100 * level['fraction']:.2f} %)"


if __name__ == "__main__":
    sys.exit(common.main_wrapper(main))
