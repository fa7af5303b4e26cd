"""Invisibility of the mark: PSNR-Y and SSIM-Y per frame, and 1:1 crops of flat regions.

    python benchmarks/quality.py [--frames PATH...] [--out DIR] [--strength S] [--flat-rms GREY]

For every image: embed with the fixed test key and payload, compare marked and original
luma (PSNR-Y, SSIM-Y from watermark._metrics, not the codec's own figure). For the frames
matching --crops, write the flattest --crop-size window (lowest luma variance) before and
after marking, and the difference x16 around mid-grey, as PNGs under OUT/crops/.
Table on stdout, JSON in OUT/quality.json. --flat-rms marks with another flat-fill
amplitude (grey levels RMS, CodecParams.flat_rms) to see what a stronger floor costs.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import sys
import time

import _common as common
import numpy as np

from watermark import embed_frame
from watermark._metrics import psnr_y, ssim_y
from watermark._params import DEFAULT_PARAMS
from watermark.bench import flattest_window  # one implementation, shared with leaktrace bench

PSNR_TARGET = 42.0  # dB, DESIGN.md
DEFAULT_CROPS = ("morevna_*", "peppercarrot_witches-of-chaosah*", "pcrunner_kitchen*")
DIFF_GAIN = 16


def amplified_difference(before: np.ndarray, after: np.ndarray, gain: int) -> np.ndarray:
    """``128 + gain * (after - before)`` per channel, clipped to uint8."""
    d = after.astype(np.float64) - before.astype(np.float64)
    if before.dtype == np.uint16:
        d /= 257.0
    return np.clip(np.rint(128.0 + gain * d), 0, 255).astype(np.uint8)


def to_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    return np.clip(np.rint(image / 257.0), 0, 255).astype(np.uint8)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_common_args(parser)
    parser.add_argument("--strength", type=float, default=1.0, help="embed strength (1.0)")
    common.add_flat_rms_arg(parser)
    parser.add_argument(
        "--crops",
        nargs="*",
        default=list(DEFAULT_CROPS),
        metavar="GLOB",
        help="file-name patterns of frames to write crops for (default: %(default)s)",
    )
    parser.add_argument("--crop-size", type=int, default=256, help="crop side in px (256)")
    args = parser.parse_args()
    if args.crop_size < 16:
        parser.error(f"--crop-size must be >= 16; got {args.crop_size}")
    params = dataclasses.replace(DEFAULT_PARAMS, flat_rms=args.flat_rms)

    paths = [
        f.path for f in common.frame_infos(args.frames)
    ]  # every file decodes: fail before writing
    rows, records, crops = [], [], []
    for i, path in enumerate(paths, start=1):
        image = common.read_image(path)
        t0 = time.perf_counter()
        result = embed_frame(
            image, common.TEST_KEY, common.TEST_PAYLOAD, strength=args.strength, params=params
        )
        ms = (time.perf_counter() - t0) * 1e3
        marked = result.image
        if marked.shape != image.shape or marked.dtype != image.dtype:
            raise common.BenchError(
                f"{path.name}: embed_frame returned {marked.shape} {marked.dtype}, "
                f"expected {image.shape} {image.dtype}"
            )
        p, s = psnr_y(image, marked), ssim_y(image, marked)
        h, w = image.shape[:2]
        rec = {
            "frame": path.name,
            "height": h,
            "width": w,
            "channels": 1 if image.ndim == 2 else image.shape[2],
            "psnr_y_db": p,
            "ssim_y": s,
            "codec_psnr_y_db": result.psnr_y,
            "chip_level": result.level,
            "embed_ms": ms,
        }
        if any(fnmatch.fnmatch(path.name, g) for g in args.crops):
            rgb_before = image[..., :3] if image.ndim == 3 else image
            rgb_after = marked[..., :3] if marked.ndim == 3 else marked
            r, c = flattest_window(rgb_before, args.crop_size)
            win = (slice(r, r + args.crop_size), slice(c, c + args.crop_size))
            stem = path.stem
            files = {
                "before": f"crops/{stem}_before.png",
                "after": f"crops/{stem}_after.png",
                "diff_x16": f"crops/{stem}_diff_x{DIFF_GAIN}.png",
            }
            common.write_png(args.out / files["before"], to_uint8(rgb_before[win]))
            common.write_png(args.out / files["after"], to_uint8(rgb_after[win]))
            common.write_png(
                args.out / files["diff_x16"],
                amplified_difference(rgb_before[win], rgb_after[win], DIFF_GAIN),
            )
            crop_psnr = psnr_y(rgb_before[win], rgb_after[win])
            rec["crop"] = {"row": r, "col": c, "size": args.crop_size, "psnr_y_db": crop_psnr}
            rec["crop"].update(files)
            crops.append((path.name, r, c, crop_psnr))
        records.append(rec)
        rows.append(
            [
                path.name,
                f"{w}x{h}",
                str(2**result.level),
                common.fmt(p),
                common.fmt(s, ".4f"),
                common.fmt(ms, ".0f"),
            ]
        )
        print(f"[quality] {i}/{len(paths)} {path.name}", file=sys.stderr, flush=True)

    psnrs = np.array([r["psnr_y_db"] for r in records])
    ssims = np.array([r["ssim_y"] for r in records])
    summary = {
        "frames": len(records),
        "psnr_y_db_mean": float(np.mean(psnrs)),
        "psnr_y_db_min": float(np.min(psnrs)),
        "ssim_y_mean": float(np.mean(ssims)),
        "ssim_y_min": float(np.min(ssims)),
        "psnr_target_db": PSNR_TARGET,
        "frames_below_target": int(np.sum(psnrs < PSNR_TARGET)),
    }
    doc = {
        "benchmark": "quality",
        "key": "sha256('leaktrace benchmark key A')",
        "payload": common.TEST_PAYLOAD,
        "strength": args.strength,
        "flat_rms": args.flat_rms,
        "summary": summary,
        "frames": records,
        "machine": common.machine_info(),
    }
    json_path = common.write_json(args.out, "quality.json", doc)

    print(
        f"## Quality (strength {args.strength:g}, flat fills {args.flat_rms:g} grey levels RMS, "
        f"payload {common.TEST_PAYLOAD:#010x})\n"
    )
    headers = ["frame", "size", "chips px", "PSNR-Y dB", "SSIM-Y", "embed ms"]
    print(common.markdown_table(headers, rows))
    print()
    print(
        common.markdown_table(
            ["", "mean", "min"],
            [
                [
                    "PSNR-Y dB",
                    common.fmt(summary["psnr_y_db_mean"]),
                    common.fmt(summary["psnr_y_db_min"]),
                ],
                [
                    "SSIM-Y",
                    common.fmt(summary["ssim_y_mean"], ".4f"),
                    common.fmt(summary["ssim_y_min"], ".4f"),
                ],
            ],
        )
    )
    print(
        f"\nFrames below the {PSNR_TARGET:g} dB target: {summary['frames_below_target']}"
        f" of {len(records)}"
    )
    if crops:
        print(f"\nFlattest {args.crop_size}x{args.crop_size} crops in {args.out / 'crops'}:")
        for name, r, c, cp in crops:
            print(f"- {name}: at (row {r}, col {c}), crop PSNR-Y {common.fmt(cp)} dB")
    print(f"\nJSON: {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(common.main_wrapper(main))
