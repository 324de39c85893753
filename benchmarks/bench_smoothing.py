"""Temporal smoothing measured on synthetic motion with known truth (no model; seconds on a CPU). Not a test.

    python benchmarks/bench_smoothing.py [--noise-rad 0.05] [--noise-m 0.02] [--fps 30] [--seconds 4]

Rotations: a joint turning about a fixed axis with speed varying as v * t * sin(t) (v = 0.6, 2, 5 rad/s)
plus Gaussian rotation noise; translation: a root walking on a curve at 0.5-3 m/s plus Gaussian
noise. For raw values, the causal One-Euro filter (``--smooth oneeuro-causal``) and the forward-backward
One-Euro (``--smooth oneeuro``, the default), the table gives the mean error to the truth (rad or m) and
the mean frame-to-frame acceleration (rad or m per frame^2, the jitter measure of the tests).
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.spatial.transform import Rotation

from dpmesh_infer.video.smooth import OneEuroConfig, one_euro_rotations, one_euro_vectors


def _rot_case(speed, t, noise, rng):
    angle = 2.0 + speed * t * np.sin(t)
    axis = np.array([0.3, 0.2, 0.93]) / np.linalg.norm([0.3, 0.2, 0.93])
    truth = Rotation.from_rotvec(axis * angle[:, None])
    noisy = truth * Rotation.from_rotvec(rng.normal(0, noise, (len(t), 3)))
    return truth, noisy


def _rot_metrics(truth, est):
    err = (truth.inv() * est).magnitude()[5:-5].mean()
    step = (est[:-1].inv() * est[1:]).as_rotvec()
    acc = np.linalg.norm(np.diff(step, axis=0), axis=1).mean()
    return err, acc


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--noise-rad", type=float, default=0.05)
    ap.add_argument("--noise-m", type=float, default=0.02)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--min-cutoff", type=float, default=1.0)
    ap.add_argument("--beta", type=float, default=0.3)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    t = np.arange(int(args.seconds * args.fps)) / args.fps
    filters = {"oneeuro-causal": OneEuroConfig(args.min_cutoff, args.beta, zero_lag=False),
               "oneeuro (fwd-bwd)": OneEuroConfig(args.min_cutoff, args.beta, zero_lag=True)}
    print(f"noise {args.noise_rad} rad / {args.noise_m} m, {args.fps:g} fps, min_cutoff {args.min_cutoff} Hz, "
          f"beta {args.beta}")
    print(f"{'signal':<28}{'method':<20}{'error to truth':>16}{'acceleration':>14}")
    for speed in (0.6, 2.0, 5.0):
        truth, noisy = _rot_case(speed, t, args.noise_rad, rng)
        name = f"rotation, v={speed:g} rad/s"
        e, a = _rot_metrics(truth, noisy)
        print(f"{name:<28}{'raw':<20}{e:>12.4f} rad{a:>14.4f}")
        for label, cfg in filters.items():
            est = Rotation.from_rotvec(one_euro_rotations(noisy.as_rotvec()[:, None], t, cfg)[:, 0])
            e, a = _rot_metrics(truth, est)
            print(f"{'':<28}{label:<20}{e:>12.4f} rad{a:>14.4f}")
    for speed in (0.5, 1.5, 3.0):
        truth = np.stack([speed * t, 0.3 * np.sin(2 * t), 4.0 + 0.5 * np.cos(t)], axis=1)
        noisy = truth + rng.normal(0, args.noise_m, truth.shape)
        name = f"root, v={speed:g} m/s"
        for label, est in [("raw", noisy), *[(k, one_euro_vectors(noisy, t, c)) for k, c in filters.items()]]:
            e = np.linalg.norm(est - truth, axis=1)[5:-5].mean()
            a = np.linalg.norm(np.diff(est, 2, axis=0), axis=1).mean()
            print(f"{name if label == 'raw' else '':<28}{label:<20}{e:>14.4f} m{a:>14.4f}")


if __name__ == "__main__":
    main()
