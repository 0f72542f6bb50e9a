"""Language models for evaluation, with lm-evaluation-harness's contract:

- loglikelihood([(context, continuation)]) -> [(logprob, is_greedy)]
- loglikelihood_rolling([text]) -> [logprob]
- generate_until([(context, {"until": [...], "max_gen_toks": n})]) -> [text]

Tokenisation follows lm-eval's TemplateLM/HFLM exactly (trailing context spaces move to the continuation; the
continuation is the whole encoding minus the context's; an empty context scores after the BOS, else EOS,
token; rolling windows of the model's context length), so the backends differ only in how they compute.
Backends: `slmkit` (any precision; shared contexts computed once, see scorer.py), `transformers` (the
reference) and `llamacpp` (GGUF files through llama-cpp-python). Each takes an `on_done(indices, results)`
callback that the evaluator uses to cache finished requests and drive its progress bar.
"""

from __future__ import annotations

import abc
from typing import Callable, Sequence

import torch

from slmkit.errors import SlmError
from slmkit.tokenizer import Tokenizer

OnDone = Callable[[list[int], list], None] | None


def _split_stops(text: str, until: Sequence[str]) -> str:
    for term in until:  # lm-eval's postprocess_generated_text
        if term:
            text = text.split(term)[0]
    return text


class EvalLM(abc.ABC):
    """Token-level scoring and lm-eval's string-level request handling on top of it."""

    backend = "base"
    batch_size = 8

    def __init__(self, tokenizer: Tokenizer, max_length: int, name: str, precision: str):
        if tokenizer is None:
            raise SlmError(f"{name} has no tokenizer; evaluation needs one (give a model folder or GGUF with one)")
        self.tokenizer, self.max_length, self.name, self.precision = tokenizer, max_length, name, precision
        self.max_gen_toks = 256

    # --- what a backend implements ---------------------------------------------------------------------

    @abc.abstractmethod
    def score_tokens(self, requests: list[tuple[list[int], list[int]]], on_done: OnDone = None
                     ) -> list[tuple[float, bool]]:
        """(sum of log-probabilities, all tokens greedy) of each continuation after its context (token ids)."""

    @abc.abstractmethod
    def generate_tokens(self, prompts: list[list[int]], until: list[str], max_gen_toks: int,
                        on_done: OnDone = None) -> list[str]:
        """Greedy text after each prompt; may stop once a stop string appears (the caller cuts there)."""

    def close(self) -> None:
        """Release what the backend holds (llama.cpp's context)."""

    @property
    def fingerprint(self) -> str:
        """Identifies the model and the way it computes, for the request cache."""
        return f"{self.backend}:{self.precision}:{self.name}"

    # --- lm-eval's tokenisation ------------------------------------------------------------------------

    @property
    def prefix_token_id(self) -> int:
        tid = self.tokenizer.bos_id if self.tokenizer.bos_id is not None else self.tokenizer.eos_id
        if tid is None:
            raise SlmError("the tokenizer has neither a BOS nor an EOS token to score an empty context after")
        return tid

    def tok_encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens)

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        if context == "":
            cont = self.tok_encode(continuation, add_special_tokens=False)
            if not cont:
                raise SlmError("a continuation encodes to no tokens")
            return ([self.prefix_token_id], cont) if self.prefix_token_id != cont[0] else (cont[:1], cont[1:])
        return self.tokenizer.split_continuation(context, continuation)

    def _fit(self, ctx: list[int], cont: list[int]) -> tuple[list[int], list[int]]:
        """lm-eval's left truncation: the model sees the last max_length + 1 tokens (minus the last)."""
        if not cont:
            raise SlmError("a continuation encodes to no tokens")
        if len(cont) > self.max_length:
            raise SlmError(f"a continuation of {len(cont)} tokens exceeds the model's {self.max_length}-token context")
        keep = self.max_length + 1 - len(cont)
        return (ctx[-keep:] if len(ctx) > keep else ctx), cont

    # --- the contract ------------------------------------------------------------------------------------

    def plan(self, requests: Sequence[tuple[str, str]] | None) -> None:
        """Told all of a task's log-likelihood requests before some are scored (SlmkitLM shares prefixes)."""

    def loglikelihood(self, requests: Sequence[tuple[str, str]], on_done: OnDone = None) -> list[tuple[float, bool]]:
        memo = getattr(self, "_encoded", None) or {}
        pairs = [memo.get((c, x)) or self._fit(*self.encode_pair(c, x)) for c, x in requests]
        return self.score_tokens(pairs, on_done)

    def rolling_windows(self, text: str) -> list[tuple[list[int], list[int]]]:
        """lm-eval's get_rolling_token_windows + make_disjoint_window with context_len=1."""
        tokens = self.tok_encode(text)
        if not tokens:
            return []
        n = self.max_length
        windows = [([self.prefix_token_id] + tokens[: min(n, len(tokens)) - 1], tokens[:n])]
        done = min(n, len(tokens))
        while done < len(tokens):
            size = min(len(tokens) - done, n)
            end = done + size
            windows.append((tokens[end - n - 1 : end - 1], tokens[end - size : end]))
            done += size
        return [(a[: len(a) - (len(b) - 1)], b) for a, b in windows]

    def loglikelihood_rolling(self, texts: Sequence[str], on_done: OnDone = None) -> list[float]:
        owners, pairs = [], []
        for i, text in enumerate(texts):
            for w in self.rolling_windows(text):
                owners.append(i)
                pairs.append(w)
        left = [0] * len(texts)  # windows still to score, per text
        for o in owners:
            left[o] += 1
        totals = [0.0] * len(texts)

        def done(idx: list[int], res: list) -> None:
            finished = []
            for j, (lp, _) in zip(idx, res):
                totals[owners[j]] += lp
                left[owners[j]] -= 1
                if left[owners[j]] == 0:
                    finished.append(owners[j])
            if on_done and finished:
                on_done(finished, [totals[i] for i in finished])

        self.score_tokens(pairs, done)
        return totals

    def generate_until(self, requests: Sequence[tuple[str, dict]], on_done: OnDone = None) -> list[str]:
        out: list[str | None] = [None] * len(requests)
        by_kwargs: dict[tuple, list[int]] = {}
        for i, (_, kw) in enumerate(requests):
            key = (tuple(kw.get("until", ())), int(kw.get("max_gen_toks", self.max_gen_toks)))
            by_kwargs.setdefault(key, []).append(i)
        eos = self.tokenizer.eos_token
        for (until, max_gen), idx in by_kwargs.items():
            stops = list(until) + ([eos] if eos and eos not in until else [])
            limit = self.max_length - max_gen
            if limit <= 0:
                raise SlmError(f"max_gen_toks {max_gen} leaves no room in the model's {self.max_length}-token context")
            prompts = [self.tok_encode(requests[i][0])[-limit:] for i in idx]

            def done(sub: list[int], res: list, idx=idx) -> None:
                texts = [_split_stops(t, stops) for t in res]
                for j, t in zip(sub, texts):
                    out[idx[j]] = t
                if on_done:
                    on_done([idx[j] for j in sub], texts)

            self.generate_tokens(prompts, stops, max_gen, done)
        return out  # type: ignore[return-value]


def _by_length(items: Sequence, key: Callable) -> list[int]:
    return sorted(range(len(items)), key=lambda i: -key(items[i]))


# --- slmkit ----------------------------------------------------------------------------------------------


# Continuations that share a context are packed into one row, up to this many branch tokens: a multiple-choice
# item always fits, while rolling windows (which all start from the same one-token context) get a row each
# instead of one enormous row whose attention grows with the square of its length.
BRANCH_BUDGET = 2048


class SlmkitLM(EvalLM):
    """A slmkit Transformer: a request group's shared context is computed once (scorer.py)."""

    backend = "slmkit"

    def __init__(self, model, tokenizer: Tokenizer, name: str, batch_size: int = 8, max_length: int | None = None,
                 adapter: str | None = None):
        from slmkit.runtime import SlmkitRuntime

        self.runtime = SlmkitRuntime(model, tokenizer, name, adapter)  # its fingerprint names the adapter
        super().__init__(tokenizer, max_length or self.runtime.context_length, name, self.runtime.precision)
        self.model, self.batch_size = self.runtime.model, batch_size

    @classmethod
    def load(cls, path: str, precision: str = "fp32", device: str | None = None, batch_size: int = 8,
             max_length: int | None = None, adapter: str | None = None) -> "SlmkitLM":
        """`path` at a named precision (runtime.precision): int8/int4 quantise after loading, as `slm bench` does."""
        from slmkit.runtime import SlmkitRuntime

        rt = SlmkitRuntime.load(path, precision, device, adapter=adapter)
        return cls(rt.model, rt.tokenizer, rt.source, batch_size, max_length, adapter)

    @property
    def fingerprint(self) -> str:
        return self.runtime.fingerprint

    def plan(self, requests: Sequence[tuple[str, str]] | None) -> None:
        """Decide which context prefixes to compute once, from all of a task's log-likelihood requests (not only
        those left to score after the cache), so each request's result does not depend on which others are
        scored with it: on the cache, the batch size or the shard. None: forget the plan."""
        from slmkit.eval.scorer import shared_prefixes

        if requests is None:
            self._shared, self._encoded = None, {}
            return
        self._encoded = {(c, x): self._fit(*self.encode_pair(c, x)) for c, x in requests}
        self._shared = shared_prefixes([ctx for ctx, _ in self._encoded.values()])

    def score_tokens(self, requests, on_done=None):
        from slmkit.eval.scorer import Group, batches, encode_prefix, score_groups

        shared = getattr(self, "_shared", None)
        if shared is None:  # no plan: shared prefixes among these requests
            from slmkit.eval.scorer import shared_prefixes

            shared = shared_prefixes([ctx for ctx, _ in requests])
        groups: list[Group] = []
        members: list[list[int]] = []
        where: dict[tuple[int, ...], int] = {}  # context -> the group still taking continuations
        for i, (ctx, cont) in enumerate(requests):
            g = where.get(tuple(ctx))
            if g is None or groups[g].branch_tokens + len(cont) - 1 > BRANCH_BUDGET:
                g = where[tuple(ctx)] = len(groups)
                groups.append(Group(list(ctx), [], shared.get(tuple(ctx), 0)))
                members.append([])
            groups[g].continuations.append(list(cont))
            members[g].append(i)
        by_prefix: dict[tuple[int, ...], list[int]] = {}
        for g, group in enumerate(groups):
            by_prefix.setdefault(tuple(group.context[: group.shared]), []).append(g)
        out: list = [None] * len(requests)
        for key, gs in by_prefix.items():
            prefix = encode_prefix(self.model, list(key)) if key else None
            for batch in batches([groups[g] for g in gs], self.batch_size):
                self._score_batch([gs[b] for b in batch], groups, members, prefix, out, on_done)
        return out

    def _score_batch(self, batch, groups, members, prefix, out, on_done) -> None:
        from slmkit.eval.scorer import score_groups

        results = score_groups(self.model, [groups[g] for g in batch], prefix)
        done_idx, done_res = [], []
        for g, res in zip(batch, results):
            for i, r in zip(members[g], res):
                out[i] = r
                done_idx.append(i)
                done_res.append(r)
        if on_done:
            on_done(done_idx, done_res)

    def generate_tokens(self, prompts, until, max_gen_toks, on_done=None):
        from slmkit.engine import Engine
        from slmkit.engine.sampling import SamplingParams
        from slmkit.engine.text import stream_rows

        engine = Engine(self.model)
        greedy = SamplingParams(temperature=0.0)
        out: list = [None] * len(prompts)
        order = _by_length(prompts, len)
        for s in range(0, len(order), self.batch_size):
            idx = order[s : s + self.batch_size]
            # a row is finished at a stop id or once a stop string shows in its text; lm-eval cuts the text
            rows = stream_rows(engine, self.tokenizer, [prompts[i] for i in idx], max_gen_toks, greedy, until)
            for r, i in enumerate(idx):
                out[i] = self.tokenizer.decode(rows[r].text_ids, skip_special_tokens=True)
            if on_done:
                on_done(idx, [out[i] for i in idx])
        return out


# --- transformers (the reference) --------------------------------------------------------------------------


class TransformersLM(EvalLM):
    """A transformers AutoModelForCausalLM on a checkpoint folder, scored the way lm-eval's HF backend does:
    the whole context + continuation per request, right-padded batches, log-softmax over the vocabulary."""

    backend = "transformers"

    def __init__(self, runtime, batch_size: int = 8):
        self.runtime, self.model, self.device = runtime, runtime.model, runtime.device
        super().__init__(runtime.tokenizer, runtime.context_length, runtime.source, runtime.precision)
        self.batch_size = batch_size

    @property
    def fingerprint(self) -> str:
        return self.runtime.fingerprint

    @torch.inference_mode()
    def score_tokens(self, requests, on_done=None):
        import torch.nn.functional as F

        out: list = [None] * len(requests)
        order = _by_length(requests, lambda r: len(r[0]) + len(r[1]))
        for s in range(0, len(order), self.batch_size):
            idx = order[s : s + self.batch_size]
            seqs = [(requests[i][0] + requests[i][1])[:-1] for i in idx]
            width = max(map(len, seqs))
            inp = torch.zeros(len(idx), width, dtype=torch.long)
            for r, q in enumerate(seqs):
                inp[r, : len(q)] = torch.tensor(q)
            logp = F.log_softmax(self.model(inp.to(self.device)).logits.float(), dim=-1)
            res = []
            for r, i in enumerate(idx):
                ctx, cont = requests[i]
                n0 = len(ctx) - 1
                rows = logp[r, n0 : n0 + len(cont)]
                tgt = torch.tensor(cont, device=rows.device)
                res.append((float(rows.gather(-1, tgt[:, None]).double().sum()), bool((rows.argmax(-1) == tgt).all())))
            for i, r in zip(idx, res):
                out[i] = r
            if on_done:
                on_done(idx, res)
        return out

    @torch.inference_mode()
    def generate_tokens(self, prompts, until, max_gen_toks, on_done=None):
        out: list = [None] * len(prompts)
        eos = self.tokenizer.eos_id
        for i, p in enumerate(prompts):  # one at a time: no padding, so no padding effects on greedy search
            ids = self.model.generate(torch.tensor([p], device=self.device), max_new_tokens=max_gen_toks,
                                      do_sample=False, eos_token_id=eos, pad_token_id=eos)[0, len(p):]
            out[i] = self.tokenizer.decode(ids.tolist(), skip_special_tokens=True)
            if on_done:
                on_done([i], [out[i]])
        return out


# --- llama.cpp ---------------------------------------------------------------------------------------------


class LlamaCppLM(EvalLM):
    """A GGUF file run by llama.cpp (llama-cpp-python), with slmkit's tokenizer from the same file (checked
    equal to llama.cpp's in tests/test_gguf.py). A group's context is evaluated once; each continuation
    rolls the KV cache back to the context's end."""

    backend = "llamacpp"

    def __init__(self, runtime):
        self.runtime, self.llm = runtime, runtime.llm
        super().__init__(runtime.tokenizer, runtime.context_length, runtime.source, runtime.precision)

    @property
    def fingerprint(self) -> str:
        return self.runtime.fingerprint

    def score_tokens(self, requests, on_done=None):
        import numpy as np

        out: list = [None] * len(requests)
        order = _by_length(requests, lambda r: len(r[0]) + len(r[1]))
        last_ctx: list[int] | None = None
        for i in order:
            ctx, cont = requests[i]
            if ctx != last_ctx:
                self.llm.reset()
                self.llm.eval(ctx)
                last_ctx = list(ctx)
            self.llm.n_tokens = len(ctx)  # roll back to the context's end (eval drops the cache past it)
            if len(cont) > 1:
                self.llm.eval(cont[:-1])
            logits = np.asarray(self.llm.scores[len(ctx) - 1 : len(ctx) - 1 + len(cont)], dtype=np.float64)
            logp = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
            tgt = np.asarray(cont)
            out[i] = (float(logp[np.arange(len(cont)), tgt].sum()), bool((logits.argmax(-1) == tgt).all()))
            if on_done:
                on_done([i], [out[i]])
        return out

    def close(self) -> None:
        self.runtime.close()  # now, not in Llama.__del__ at interpreter exit (which fails noisily)

    def generate_tokens(self, prompts, until, max_gen_toks, on_done=None):
        from slmkit.engine.text import TextStream

        out: list = [None] * len(prompts)
        for i, p in enumerate(prompts):
            self.llm.reset()
            stream = TextStream(self.tokenizer, until)
            for tok in self.llm.generate(p, temp=0.0, top_k=1, reset=True):
                if tok == self.llm.token_eos() or len(stream.ids) >= max_gen_toks:
                    break
                stream.push(tok)
                if stream.done:  # a stop string
                    break
            out[i] = self.tokenizer.decode(stream.text_ids, skip_special_tokens=True)
            if on_done:
                on_done([i], [out[i]])
        return out


# --- any OpenAI-compatible server -----------------------------------------------------------------------------


class OpenAILM(EvalLM):
    """A model behind an OpenAI-compatible /v1/completions endpoint (slm serve, llama.cpp's server, vLLM), with the
    tokenizer of the same model read locally. Log-likelihoods: the context + continuation token ids as the prompt
    with echo, max_tokens 0 and logprobs 1 (as lm-eval's local-completions does): the continuation's token
    log-probabilities, greedy where each is the top token. Generation: greedy completions of the prompt ids.
    `batch_size` requests are in flight at once, so a batching server fills its slots."""

    backend = "openai"

    def __init__(self, url: str, tokenizer: Tokenizer, name: str, batch_size: int = 8, max_length: int | None = None,
                 api_key: str | None = None, timeout: float = 600.0):
        import os

        self.url, self.timeout = url.rstrip("/"), timeout
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY")
        listing = self._call("GET", "/models")
        models = listing.get("data") or []
        if not models:
            raise SlmError(f"{self.url}/models lists no model")
        self.served = models[0]["id"]
        context = max_length or models[0].get("context_length") or models[0].get("max_model_len") or 2048
        super().__init__(tokenizer, int(context), name, "server")
        self.batch_size = batch_size

    @property
    def fingerprint(self) -> str:
        return f"openai:{self.url}:{self.served}"

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        import json
        import urllib.error
        import urllib.request

        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.url + path, method=method, headers=headers,
                                     data=None if body is None else json.dumps(body).encode())
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            detail = e.read().decode("utf-8", "replace")
            try:
                detail = json.loads(detail)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                pass
            raise SlmError(f"{self.url}{path} answered {e.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as e:  # refused, unresolvable, timed out: no retries
            reason = getattr(e, "reason", e)
            raise SlmError(f"cannot reach {self.url} ({reason}); start the server (slm serve MODEL) or check "
                           f"--url") from None

    def _parallel(self, fn, items: list, on_done: OnDone) -> list:
        from concurrent.futures import ThreadPoolExecutor

        out: list = [None] * len(items)
        with ThreadPoolExecutor(max_workers=self.batch_size) as pool:
            for s in range(0, len(items), self.batch_size):
                idx = list(range(s, min(s + self.batch_size, len(items))))
                for i, r in zip(idx, pool.map(fn, [items[i] for i in idx])):
                    out[i] = r
                if on_done:
                    on_done(idx, [out[i] for i in idx])
        return out

    def score_tokens(self, requests, on_done=None):
        def one(req: tuple[list[int], list[int]]) -> tuple[float, bool]:
            ctx, cont = req
            res = self._call("POST", "/completions", {"model": self.served, "prompt": ctx + cont, "echo": True,
                                                      "max_tokens": 0, "logprobs": 1, "temperature": 0.0})
            lp = res["choices"][0]["logprobs"]
            n = len(cont)
            if len(lp["token_logprobs"]) != len(ctx) + n:
                raise SlmError(f"{self.url} scored {len(lp['token_logprobs'])} prompt tokens for {len(ctx) + n} "
                               "sent; the server does not take token-id prompts as they are")
            tokens, tops = lp["tokens"][-n:], lp["top_logprobs"][-n:]
            greedy = all(t == max(top, key=top.get) for t, top in zip(tokens, tops) if top)
            return float(sum(lp["token_logprobs"][-n:])), greedy

        return self._parallel(one, list(requests), on_done)

    def generate_tokens(self, prompts, until, max_gen_toks, on_done=None):
        stops = [u for u in until if u][:4]  # the API takes up to 4; the caller cuts at every stop string

        def one(prompt: list[int]) -> str:
            res = self._call("POST", "/completions", {"model": self.served, "prompt": prompt, "max_tokens": max_gen_toks,
                                                      "temperature": 0.0, **({"stop": stops} if stops else {})})
            return res["choices"][0]["text"]

        return self._parallel(one, list(prompts), on_done)


def load_lm(model: str, backend: str = "slmkit", precision: str = "fp32", device: str | None = None,
            batch_size: int = 8, max_length: int | None = None, adapter: str | None = None,
            url: str | None = None) -> EvalLM:
    """An evaluation LM for a model path/name on one of the runtimes at a named precision (llama.cpp: a GGUF file
    runs as it is; any other model at the file type that stands beside the precision); backend "openai": the
    server at `url`, with `model`'s tokenizer."""
    from slmkit.runtime import load_runtime

    if (backend == "openai") != (url is not None):
        raise SlmError("--url names the server of --backend openai; give both or neither")
    if backend == "openai":
        if adapter is not None:
            raise SlmError("--adapter runs on the slmkit backend; serve the adapter (slm serve --adapter) instead")
        from slmkit.checkpoint import load_tokenizer

        tokenizer = load_tokenizer(model)
        return OpenAILM(url, tokenizer, model, batch_size, max_length)
    if backend == "slmkit":
        return SlmkitLM.load(model, precision, device, batch_size, max_length, adapter)
    if adapter is not None:
        raise SlmError(f"--adapter runs on the slmkit backend; merge it first (slm merge BASE ADAPTER -o OUT) to "
                       f"evaluate it on {backend}")
    if backend == "transformers":
        return TransformersLM(load_runtime(model, "transformers", precision, device), batch_size)
    if backend == "llamacpp":
        return LlamaCppLM(load_runtime(model, "llamacpp", precision, n_ctx=max_length, logits_all=True))
    raise SlmError(f"unknown backend {backend!r}; use slmkit, transformers, llamacpp or openai")
