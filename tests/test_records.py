"""The compact neuron records (vaesae.metrics.records): what is stored, what the one reader gives back."""

import numpy as np
import pytest

from vaesae.metrics import common as M_common, evaluate as M_evaluate
from vaesae.analysis import thresholds as pm
from vaesae.errors import VaesaeError
from vaesae.io import atomic_save_npz
from vaesae.metrics.records import load_neurons, load_run_neurons, narrowing_keeps, neurons_path, save_neurons


def _record(n_neurons=64, n_samples=2000, seed=0):
    rng = np.random.default_rng(seed)
    acts, f = pm.synthetic_activations("dsprites", rng, n_neurons=n_neurons, n_samples=n_samples)
    lat = np.maximum(rng.standard_normal((n_samples, 20)), 0).astype(np.float32)
    res = M_evaluate.compute_metrics(rng.standard_normal((n_samples, 10)), acts, f, latent_acts=lat,
                            factor_names=[n for n, _ in pm.DATASET_FACTORS["dsprites"]])
    arrays = {k: v for k, v in res.items() if isinstance(v, np.ndarray)}
    arrays["val_active_count"] = rng.integers(0, 5, n_neurons).astype(np.int64)
    arrays["val_n"] = np.asarray(5 * n_samples)
    return arrays


def test_the_compact_record_reads_back_as_the_evaluation_wrote_it(tmp_path):
    arrays = _record()
    arrays["top_values"][0, 0] = 1e-9   # below float16's range: must stay a firing
    save_neurons(tmp_path / "neurons_final.npz", arrays)
    with np.load(tmp_path / "neurons_final.npz", allow_pickle=False) as z:
        stored = set(z.files)
        assert z["top_indices"].dtype == np.uint16 and z["top_values"].dtype == np.float16
        assert z["mi_nats"].dtype == z["neuron_entropy"].dtype == z["latent_mi_nats"].dtype == np.float32
        assert z["activation_rates"].dtype == np.float64   # k / n_eval: float32 could flip a dead threshold
    assert "mi" not in stored and "latent_mi" not in stored and "mi_nats" in stored
    back = load_neurons(tmp_path / "neurons_final.npz")
    assert back.keys() - {"top_rows"} == arrays.keys()
    kept = back.get("top_rows", np.arange(len(arrays["activation_rates"])))
    for k, v in arrays.items():
        assert back[k].dtype == v.dtype, k
        got, want = (back[k][kept], v[kept]) if k in ("top_indices", "top_values") else (back[k], v)
        if k.endswith("top_values"):
            assert np.array_equal(got > 0, want > 0) and np.allclose(got, want, rtol=1e-3, atol=1e-4)
        elif k.endswith(("mi_nats", "neuron_entropy")):   # stored float32, read back widened
            assert np.array_equal(got, want.astype(np.float32).astype(np.float64)), k
        elif k.endswith("mi"):   # derived from the float32-rounded mi_nats
            assert np.allclose(got, want, rtol=1e-6, atol=0), k
        else:
            assert np.array_equal(got, want), k   # stored exactly
    # every count the tables print is that of the evaluation
    assert M_evaluate.summarize(back["activation_rates"], back["mi"], back["mi_nats"], back["neuron_entropy"]) == \
        M_evaluate.summarize(arrays["activation_rates"], arrays["mi"], arrays["mi_nats"], arrays["neuron_entropy"])


@pytest.mark.parametrize("array", ["mi_nats", "neuron_entropy"])
def test_mi_stays_float64_when_float32_would_move_a_neuron_across_a_threshold(array, tmp_path):
    arrays = _record(seed=2)
    fe = arrays["factor_entropy"]
    if array == "mi_nats":   # MI/H(factor) a hair above 0.5: float32 rounds it to exactly 0.5, not > 0.5
        fe[0] = 1.0
        arrays["mi_nats"][3, 0] = 0.5 * (1 + 1e-12)
        arrays["mi"] = arrays["mi_nats"] / fe[None, :]
        assert arrays["mi"][3, 0] > 0.5 and np.float32(arrays["mi_nats"][3, 0]) / fe[0] <= 0.5
    else:   # MI/H(neuron) a hair above 0.5: the neuron's entropy, rounded up in float32, takes it to <= 0.5
        arrays["mi_nats"][5, 1] = 0.25
        arrays["mi"] = arrays["mi_nats"] / fe[None, :]
        arrays["neuron_entropy"][5] = 0.5 * (1 - 1e-12)
        assert 0.25 / arrays["neuron_entropy"][5] > 0.5 and 0.25 / float(np.float32(arrays["neuron_entropy"][5])) <= 0.5
    assert not narrowing_keeps(arrays)
    save_neurons(tmp_path / "neurons_final.npz", arrays)
    with np.load(tmp_path / "neurons_final.npz", allow_pickle=False) as z:
        assert z["mi_nats"].dtype == z["neuron_entropy"].dtype == np.float64   # kept as computed
        assert z["latent_mi_nats"].dtype == np.float32                            # the probe's narrowing is its own
    back = load_neurons(tmp_path / "neurons_final.npz")
    assert np.array_equal(back[array], arrays[array])
    assert M_evaluate.summarize(back["activation_rates"], back["mi"], back["mi_nats"], back["neuron_entropy"]) == \
        M_evaluate.summarize(arrays["activation_rates"], arrays["mi"], arrays["mi_nats"], arrays["neuron_entropy"])


def test_the_old_uncompressed_layout_still_reads(tmp_path):
    arrays = _record(seed=1)
    atomic_save_npz(tmp_path / "neurons_final.npz", **arrays)
    back = load_neurons(tmp_path / "neurons_final.npz")
    assert all(np.array_equal(back[k], v) for k, v in arrays.items())


def test_stage2_k500_is_its_final_record(tmp_path):
    assert neurons_path(tmp_path, "k500") == neurons_path(tmp_path) == tmp_path / "neurons_final.npz"
    with pytest.raises(VaesaeError, match="does not exist"):
        load_run_neurons(tmp_path, "k500")
    with pytest.raises(VaesaeError, match="no neuron record"):
        neurons_path(tmp_path, "k50")
    save_neurons(tmp_path / "neurons_final.npz", _record(seed=2))
    assert np.array_equal(load_run_neurons(tmp_path, "k500")["mi"], load_run_neurons(tmp_path)["mi"])


def test_the_writer_is_deterministic_and_refuses_objects(tmp_path):
    arrays = _record(seed=3)
    save_neurons(tmp_path / "a.npz", arrays)
    save_neurons(tmp_path / "b.npz", arrays)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()   # same record, same hash
    with pytest.raises(TypeError):
        save_neurons(tmp_path / "c.npz", {"x": np.array([{"a": 1}], dtype=object)})


def test_top_images_are_kept_for_every_neuron_the_figure_can_pick(tmp_path):
    """records.top_rows: at every dead threshold the TOP_ROWS_KEEP most specialised alive neurons keep their top
    images exactly; the other rows read as index -1 / value 0; reading and writing again changes nothing."""
    from vaesae.metrics import alignment
    from vaesae.metrics.records import TOP_ROWS_KEEP

    arrays = _record(n_neurons=400, seed=4)
    save_neurons(tmp_path / "a.npz", arrays)
    back = load_neurons(tmp_path / "a.npz")
    rows = set(back["top_rows"].tolist())
    assert TOP_ROWS_KEEP <= len(rows) < 400
    for t in M_common.SPEC_THRESHOLDS["dead"]:
        for neuron, _, _ in alignment.most_specialised(back, TOP_ROWS_KEEP, dead_threshold=t):
            assert neuron in rows
            assert np.array_equal(back["top_indices"][neuron], arrays["top_indices"][neuron])
    others = sorted(set(range(400)) - rows)
    assert (back["top_indices"][others] == -1).all() and (back["top_values"][others] == 0).all()
    save_neurons(tmp_path / "b.npz", back)
    assert (tmp_path / "b.npz").read_bytes() == (tmp_path / "a.npz").read_bytes()


def _compact_records():
    import importlib.util
    from vaesae.io import REPO_ROOT
    spec = importlib.util.spec_from_file_location("compact_records", REPO_ROOT / "scripts" / "compact_records.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_compact_records_narrows_old_records_and_keeps_manifests_true_even_when_it_stops(tmp_path):
    import json
    from vaesae.io import sha256_file

    cr = _compact_records()
    res = tmp_path / "results"
    a = res / "p/dsprites/seed1/topk"
    a.mkdir(parents=True)
    atomic_save_npz(a / "neurons_final.npz", **_record(seed=3))   # the old layout: float64, mi stored
    # an executed notebook that cannot be read: the script stops at it, after the records were converted
    (res / "p/01_x.ipynb").write_text("not a notebook")
    (res / "p/01_x.html").write_text("<html></html>")
    (res / "p/_manifest").mkdir(parents=True)
    key = str((a / "neurons_final.npz").relative_to(tmp_path))
    man = res / "p/_manifest/job.json"
    man.write_text(json.dumps({"outputs": {key: sha256_file(a / "neurons_final.npz")}}))
    with pytest.raises(Exception):
        cr.main([str(res)])
    with np.load(a / "neurons_final.npz", allow_pickle=False) as z:
        assert z["mi_nats"].dtype == np.float32 and "mi" not in z.files
    assert json.loads(man.read_text())["outputs"][key] == sha256_file(a / "neurons_final.npz")   # the manifest followed
    (res / "p/01_x.ipynb").unlink()
    before = sha256_file(a / "neurons_final.npz")
    assert cr.main([str(res)]) == 0 and sha256_file(a / "neurons_final.npz") == before   # a second run changes nothing
    assert json.loads(man.read_text())["outputs"][key] == before


def test_compact_records_links_the_figures_of_pages_written_before_and_their_manifests_follow(tmp_path):
    """A page written before the runner linked figures (an embedded PNG that figures/ holds) is rewritten with a
    relative link, and the manifest that recorded the page's digest gets the new one (else a --reuse study would run
    that job again, and everything after it); a second run changes nothing."""
    import base64
    import json
    from vaesae.io import sha256_file

    cr = _compact_records()
    res, fig = tmp_path / "results", tmp_path / "figures" / "p"
    fig.mkdir(parents=True)
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 50
    (fig / "fig1.png").write_bytes(png)
    page = res / "p" / "07_figures.html"
    page.parent.mkdir(parents=True)
    page.write_text(f'<html><body><img src="data:image/png;base64,{base64.b64encode(png).decode()}"/></body></html>')
    (res / "p/_manifest").mkdir()
    man = res / "p/_manifest/07.json"
    key = str(page.relative_to(tmp_path))
    man.write_text(json.dumps({"outputs": {key: sha256_file(page)}}))
    assert cr.main([str(res)]) == 0
    assert 'src="../../figures/p/fig1.png"' in page.read_text() and "data:" not in page.read_text()
    assert json.loads(man.read_text())["outputs"][key] == sha256_file(page)
    before = page.read_bytes()
    assert cr.main([str(res)]) == 0 and page.read_bytes() == before
