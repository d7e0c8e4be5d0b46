"""Power analysis and multiple comparisons of scripts/sweep_stats.py: the minimal detectable effect, the seeds
needed and Holm's correction against hand computations, then on the fabricated sweep (tests/sweeps/conftest.py)."""

from __future__ import annotations

import csv
import math

import pytest
from scipy import integrate

from sweep_stats import (
    MAX_SEEDS,
    add_seed_commands,
    collect_runs,
    holm,
    minimal_detectable_effect,
    paired_power,
    seeds_needed,
    summarize,
    to_markdown,
    write_csv,
)

# Student t quantiles from a printed table (t_{0.975, df} and t_{0.8, 4})
T975 = {4: 2.776445, 8: 2.306004, 9: 2.262157}
T80_DF4 = 0.940965


def power_by_integration(delta: float, sd: float, n: int, crit: float) -> float:
    """P(|T| > crit) for T = (Z + delta sqrt(n) / sd) / sqrt(V / (n - 1)), Z standard normal, V chi-square with
    n - 1 degrees of freedom: the definition of the noncentral t, integrated over V (no scipy.stats)."""
    df, nc = n - 1, delta * math.sqrt(n) / sd

    def phi(x: float) -> float:
        return 0.5 * (1 + math.erf(x / math.sqrt(2)))

    def integrand(v: float) -> float:
        density = v ** (df / 2 - 1) * math.exp(-v / 2) / (2 ** (df / 2) * math.gamma(df / 2))
        s = math.sqrt(v / df)
        return density * (1 - phi(crit * s - nc) + phi(-crit * s - nc))

    return integrate.quad(integrand, 0, math.inf)[0]


def test_minimal_detectable_effect_by_hand_sd1_n5():
    mde = minimal_detectable_effect(1.0, 5)
    # the textbook approximation with the table's quantiles: (2.776 + 0.941) / sqrt(5) = 1.6625
    approx = (T975[4] + T80_DF4) / math.sqrt(5)
    assert approx == pytest.approx(1.66248, abs=1e-5)
    # the exact value is a little larger, and at it the power (by direct integration) is 80%
    assert mde == pytest.approx(1.68200, abs=1e-4) and approx < mde < 1.02 * approx
    assert power_by_integration(mde, 1.0, 5, T975[4]) == pytest.approx(0.8, abs=1e-5)
    assert paired_power(mde, 1.0, 5) == pytest.approx(0.8, abs=1e-9)
    # in the units of the differences: proportional to sd; no estimate without a spread
    assert minimal_detectable_effect(0.02, 5) == pytest.approx(0.02 * mde)
    assert math.isnan(minimal_detectable_effect(1.0, 1)) and minimal_detectable_effect(0.0, 4) == 0.0
    # fewer pairs, larger MDE; with 2 pairs the approximation is far off (9.96 against 11.55)
    assert minimal_detectable_effect(1.0, 2) == pytest.approx(11.55, abs=0.01)
    assert [minimal_detectable_effect(1.0, n) for n in (2, 3, 5, 10)] == sorted(
        (minimal_detectable_effect(1.0, n) for n in (2, 3, 5, 10)), reverse=True)


def test_seeds_needed_hand_value_and_monotonicity():
    # delta = sd: 10 pairs (9.94 in the usual tables), checked on the power by integration at 9 and 10 pairs
    assert seeds_needed(1.0, 1.0) == 10
    assert power_by_integration(1.0, 1.0, 9, T975[8]) < 0.8 <= power_by_integration(1.0, 1.0, 10, T975[9])
    # the units do not matter (1 AP point with an sd of 1 point, as fractions)
    assert seeds_needed(0.01, 0.01) == 10
    # a larger difference needs fewer seeds, a larger spread more
    by_delta = [seeds_needed(d, 1.0) for d in (0.5, 0.75, 1.0, 1.5, 2.0, 3.0)]
    assert by_delta == sorted(by_delta, reverse=True) and by_delta[0] == 34 and by_delta[-1] == 4
    by_sd = [seeds_needed(1.0, sd) for sd in (0.5, 1.0, 1.5, 2.0)]
    assert by_sd == sorted(by_sd) and len(set(by_sd)) == 4
    # the answer is the first n reaching 80%, and the MDE of that n is at most the difference
    n = seeds_needed(0.8, 1.0)
    assert paired_power(0.8, 1.0, n - 1) < 0.8 <= paired_power(0.8, 1.0, n)
    assert minimal_detectable_effect(1.0, n) <= 0.8 < minimal_detectable_effect(1.0, n - 1)
    assert seeds_needed(0.0, 1.0) is None and seeds_needed(0.01, 1.0) is None  # > MAX_SEEDS
    assert seeds_needed(1.0, 0.0) == 2 and MAX_SEEDS >= 100


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04: 3 x 0.01 = 0.03, 2 x 0.03 = 0.06, max(0.06, 1 x 0.04) = 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.2, 0.5]) == pytest.approx([0.4, 0.5]) and holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])
    adjusted = holm([0.04, math.nan, 0.01])  # NaN (a comparison without a test) is not in the family
    assert adjusted[0] == pytest.approx(0.04) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.02)
    assert holm([]) == [] and holm([0.02]) == pytest.approx([0.02])


def test_summary_of_the_fabricated_sweep_has_holm_mde_and_verdicts(fabricated_sweep, tmp_path):
    runs, _ = collect_runs([fabricated_sweep])
    summary = summarize(runs, sweep_dirs=[fabricated_sweep])
    giou, diou, siou = (c.comparisons["map"] for c in summary.configurations[1:])
    # two tests in the family (siou has one pair): giou's p doubles, diou's stays (the larger one)
    assert giou.p_holm == pytest.approx(2 * giou.p) and diou.p_holm == pytest.approx(diou.p)
    assert math.isnan(siou.p_holm) and math.isnan(siou.mde) and siou.verdict() == "untested"
    # differences 0.01, 0.02, 0.02: sd 0.01 / sqrt(3); MDE with 3 pairs = 3.2640 sd
    assert giou.mde == pytest.approx(3.26404 * 0.01 / math.sqrt(3), rel=1e-4)
    assert giou.verdict() == diou.verdict() == "undecided"  # significant before Holm only
    # no target: the seeds for the observed difference (1/60 with sd 0.00577: 4 pairs)
    assert (giou.target, giou.target_source, giou.seeds_needed) == (pytest.approx(1 / 60), "observed", 4)
    text = to_markdown(summary)
    row = next(line for line in text.splitlines() if line.startswith("| `loss=giou`"))
    assert "| 0.038 * (n=3) | 0.075 n.s. |" in row
    power = text.split("## Power (mAP50-95)")[1].split("## Missing")[0]
    assert "`loss=giou`: Δ +1.67, sd(d) 0.58, 3 pairs; p 0.038, Holm 0.075 → **undecided**; MDE 1.88" in power
    assert "the observed |Δ| 1.67 needs 4 pairs (1 more seed)" in power and "`loss=siou`: 1 pair: no test" in power
    write_csv(summary, tmp_path / "s.csv", tmp_path / "r.csv")
    with open(tmp_path / "s.csv") as f:
        rows = {r["configuration"]: r for r in csv.DictReader(f)}
    assert float(rows["loss=giou"]["map_p_holm"]) == pytest.approx(2 * giou.p)
    assert rows["loss=giou"]["map_verdict"] == "undecided" and rows["loss=giou"]["map_pairs_needed"] == "4"
    assert rows["loss=ciou"]["map_mde"] == "" and rows["loss=siou"]["map_verdict"] == "untested"


def test_target_delta_decides_and_sizes_the_seeds(fabricated_sweep):
    runs, _ = collect_runs([fabricated_sweep])
    # 10 points: giou's MDE (1.88) is below it -> decided; diou's (32.7) is not -> 3 pairs needed
    summary = summarize(runs, target_delta=0.10)
    giou, diou = (c.comparisons["map"] for c in summary.configurations[1:3])
    assert giou.verdict() == "no effect >= target" and giou.target_source == "target"
    assert diou.verdict() == "undecided" and diou.seeds_needed == 3
    assert "**no difference ≥ 10.00** (MDE ≤ target)" in to_markdown(summary)
    # 1 point: giou needs 5 pairs (2 more seeds), diou 65 (63 more)
    summary = summarize(runs, target_delta=0.01)
    assert [c.comparisons["map"].seeds_needed for c in summary.configurations[1:3]] == [5, 65]


def test_add_seed_commands_continue_after_the_largest_seed(fabricated_sweep):
    runs, superseded = collect_runs([fabricated_sweep])
    d = fabricated_sweep.resolve()
    plan = add_seed_commands(summarize(runs, sweep_dirs=[fabricated_sweep], target_delta=0.01, superseded=superseded))
    # seeds 0-2 exist (siou's seed 2 only in the grid): new seeds from 3; the baseline gets the most (63)
    assert plan.seeds == {"loss=ciou": list(range(3, 66)), "loss=giou": [3, 4], "loss=diou": list(range(3, 66))}
    assert plan.commands == [
        f"python train.py -m loss=ciou,diou 'seed=range(3,66)' trainer.max_epochs=3 hydra.sweep.dir={d}",
        f"python train.py -m loss=giou seed=3,4 trainer.max_epochs=3 hydra.sweep.dir={d}",
    ]
    plan = add_seed_commands(summarize(runs, sweep_dirs=[fabricated_sweep], target_delta=0.10))
    assert plan.commands == [f"python train.py -m loss=ciou,diou seed=3 trainer.max_epochs=3 hydra.sweep.dir={d}"]
    assert "```bash\n" + plan.commands[0] + "\n```" in to_markdown(
        summarize(runs, sweep_dirs=[fabricated_sweep], target_delta=0.10))
    # decided comparisons (a large target that every MDE is below): no command
    assert add_seed_commands(summarize(runs, target_delta=0.5)).commands == []
