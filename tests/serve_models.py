"""Tiny fine-tuned model directories for serving tests: random weights, real MiniLM tokenizer files."""

import json
import shutil
from pathlib import Path

import torch

from xlmr import save
from xlmr.model import Config, Model

NER_LABELS = ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
CLASSES = ["entertainment", "geography", "health", "politics", "science/technology", "sports", "travel"]


def tiny_model(task: str, family: str = "bert", vocab_size: int = 30522, seed: int = 0) -> Model:
    """A random 2-layer model with a sequence (classify), token (ner) or qa head; positions up to 512."""
    torch.manual_seed(seed)
    labels = NER_LABELS if task == "ner" else CLASSES
    bert = family == "bert"
    config = Config(model_type=family, vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=4, intermediate_size=37, max_position_embeddings=512 if bert else 514,
                    type_vocab_size=2 if bert else 1, pad_token_id=0 if bert else 1,
                    layer_norm_eps=1e-12 if bert else 1e-5, id2label={} if task == "qa" else dict(enumerate(labels)))
    return Model(config, {"ner": "token", "qa": "qa"}.get(task, "sequence")).eval()


def tiny_finetuned(directory: Path, task: str, tokenizer_dir: str | None = None, family: str = "bert",
                   favour: str | None = None) -> Path:
    """Save a tiny model as `xlmr finetune` does (weights, tokenizer files, xlmr_task.json).

    `favour` biases the classifier towards one label so that predictions are predictable
    (e.g. 'B-PER' makes every word a person); for qa, it names a word that becomes every answer.
    """
    model = tiny_model(task, family)
    if favour and task == "qa":  # favour a word: its embedding and the start/end weights point one way
        from xlmr.tokenizer import Tokenizer

        v = torch.nn.functional.normalize(torch.randn(model.config.hidden_size), dim=0)
        with torch.no_grad():
            word = Tokenizer.from_pretrained(tokenizer_dir).convert_tokens_to_ids([favour])[0]
            model.bert.embeddings.word_embeddings.weight[word] = 20 * v
            model.qa_outputs.weight.copy_(torch.stack([v, v]))
    elif favour:
        with torch.no_grad():
            head = model.classifier.out_proj if hasattr(model.classifier, "out_proj") else model.classifier
            head.bias[model.config.label2id[favour]] = 10.0
    directory = Path(directory)
    save(model, directory)
    if tokenizer_dir:
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
            if (Path(tokenizer_dir) / name).is_file():
                shutil.copyfile(Path(tokenizer_dir) / name, directory / name)
    options = {"scheme": "auto"} if task == "ner" else {}
    info = {"task": task, "options": options, "max_length": 128, "stride": 32}
    (directory / "xlmr_task.json").write_text(json.dumps(info) + "\n", encoding="utf-8")
    return directory


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_dir, *args: str, timeout: float = 120.0):
    """`xlmr serve` in a subprocess on a free loopback port; returns (process, base URL) once healthy."""
    import os
    import subprocess
    import sys
    import time

    import httpx

    port = free_port()
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "xlmr", "serve", "--model", str(model_dir), "--host", "127.0.0.1",
                             "--port", str(port), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {proc.stdout.read().decode()[-2000:]}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not become healthy in time")


def stop_server(proc) -> int:
    import signal
    import subprocess

    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
