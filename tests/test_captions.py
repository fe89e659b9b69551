"""Fashion-MNIST captions: tone from pixels, templates, held-out queries."""
import numpy as np
import pytest

from pixrank.data import captions as C
from pixrank.text import words


def test_foreground_mean_and_tone_against_numpy():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(50, 28, 28), dtype=np.uint8)
    x[3] = 0  # no foreground at all
    m = C.foreground_mean(x)
    for i in range(50):
        fg = x[i][x[i] > C.FOREGROUND_THRESHOLD].astype(np.float64)
        assert m[i] == pytest.approx(fg.mean() if fg.size else 0.0)
    t = C.tone_of(x)
    ref = np.array([0 if v < C.TONE_DARK_BELOW else (1 if v < C.TONE_LIGHT_FROM else 2) for v in m])
    assert t.tolist() == ref.tolist()
    # float input in [0, 1] gives the same tones
    assert C.tone_of(x.astype(np.float32) / 255.0).tolist() == t.tolist()
    assert C.tone_of(x[..., None]).tolist() == t.tolist()
    with pytest.raises(ValueError):
        C.foreground_mean(np.zeros((28, 28)))


def test_tone_constants_split_sample_in_thirds():
    from pixrank.datasets import fashion_mnist
    from pixrank.data import SAMPLE_DIR
    (x, y), _ = fashion_mnist.load_data(SAMPLE_DIR)
    counts = np.bincount(C.tone_of(x), minlength=3) / len(x)
    # constants are the full training split's terciles; the stratified sample is close
    assert np.all(np.abs(counts - 1 / 3) < 0.03), counts
    assert C.TONE_DARK_BELOW < C.TONE_LIGHT_FROM


def test_render_and_default_caption():
    assert C.render("{a} {tone} {name}", "ankle boot", "dark") == "a dark ankle boot"
    assert C.render("{a} {name}", "ankle boot") == "an ankle boot"
    assert C.render("{a} {tone} {name}", "pants", "light") == "light pants"
    assert C.caption_of(9, 0) == "a dark ankle boot"
    assert C.caption_of(0) == "a t-shirt"
    with pytest.raises(ValueError):
        C.caption_of(10)


def test_sampler_covers_names_and_states_tone():
    s = C.CaptionSampler(p_class_only=0.5, seed=1)
    labels = np.repeat(np.arange(10), 40)
    tones = np.tile(np.arange(3), 134)[:400]
    caps, stated = s.sample(labels, tones)
    assert len(caps) == 400 and stated.shape == (400,)
    train = C.training_caption_set()
    for cap, lab, st, tn in zip(caps, labels, stated, tones):
        assert C.normalise(cap) in train
        assert any(n in cap for n in C.CLASS_SYNONYMS[lab])
        if st == -1:
            assert not any(t in words(cap) for t in C.TONES)
        else:
            assert st == tn and C.TONES[tn] in words(cap)
    assert 0.35 < np.mean(stated == -1) < 0.65
    again, _ = C.CaptionSampler(p_class_only=0.5, seed=1).sample(labels, tones)
    assert again == caps


def test_eval_queries_are_held_out():
    qs = C.load_eval_queries()
    train = C.training_caption_set()
    templates = {C.normalise(t.replace("{a}", " ").replace("{tone}", " ").replace("{name}", " "))
                 for t in C.TRAIN_TEMPLATES + C.TRAIN_TEMPLATES_CLASS_ONLY}
    assert len(qs) >= 30
    for q in qs:
        norm = C.normalise(q["query"])
        assert norm not in train, q
        assert norm not in templates, q
        assert q["kind"] in ("class", "class+tone")
        assert 0 <= q["label"] < 10
        assert (q["tone"] is None) == (q["kind"] == "class")
    kinds = {q["kind"] for q in qs}
    variants = {q["variant"] for q in qs}
    assert kinds == {"class", "class+tone"}
    assert {"plural", "typo", "template", "word order"} <= variants
    # every class has at least one query of each kind
    for kind in kinds:
        assert {q["label"] for q in qs if q["kind"] == kind} == set(range(10))


def test_eval_queries_malformed(tmp_path):
    p = tmp_path / "q.json"
    p.write_text('{"queries": [{"query": "x", "kind": "class", "class": "Nope"}]}')
    with pytest.raises(ValueError, match="malformed"):
        C.load_eval_queries(p)
    with pytest.raises(FileNotFoundError):
        C.load_eval_queries(tmp_path / "missing.json")


def test_load_eval_queries_rejects_files_that_are_not_query_objects(tmp_path):
    # a JSON list used to raise AttributeError (a traceback from `pixrank evaluate-search`)
    cases = {"list.json": "[1, 2]", "text.json": "not json", "items.json": '{"queries": ["dress"]}',
             "notlist.json": '{"queries": 3}'}
    for name, body in cases.items():
        (tmp_path / name).write_text(body)
        with pytest.raises(ValueError, match=f"load_eval_queries: .*{name}"):
            C.load_eval_queries(tmp_path / name)
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match="not a JSON query file"):
        C.load_eval_queries(tmp_path / "bin.json")


def test_load_eval_queries_names_the_file_and_rejects_non_text_queries(tmp_path):
    # a missing file used to surface as a bare "[Errno 2] ..." from `pixrank evaluate-search`,
    # a folder as "[Errno 21] Is a directory", and a null query was evaluated as the text 'None'
    with pytest.raises(FileNotFoundError, match="query file .*missing.json' does not exist"):
        C.load_eval_queries(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="is a folder"):
        C.load_eval_queries(tmp_path)
    for body in ('null', '""', '"   "', '5', '["boots"]'):
        p = tmp_path / "q.json"
        p.write_text('{"queries": [{"query": %s, "kind": "class", "class": "Ankle boot"}]}' % body)
        with pytest.raises(ValueError, match=r"query #0 must have a non-empty string \"query\""):
            C.load_eval_queries(p)
