"""Sampling settings on the transformers backend mean what they mean on vLLM: stop strings in the
generated text only, per-request seeds, and no defaults from the model's generation_config.
The untrained tiny model writes noise, which is all these tests need."""

from __future__ import annotations

import asyncio

import pytest

from agentgym.policy import SamplingParams


@pytest.fixture(scope="module")
def gen(tiny_dir):
    from agentgym.policies.hf import HFGenerator
    from agentgym.policies.llm import load_tokenizer

    g = HFGenerator(str(tiny_dir), load_tokenizer(str(tiny_dir)))
    yield g
    g.close()


@pytest.fixture(scope="module")
def prompts(gen):
    tok = gen.tokenizer
    return [
        tok.encode(f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)
        for text in ("hello", "what is 9 * 8?", "go")
    ]


def run(gen, prompts, sampling):
    return asyncio.run(gen.generate(prompts, sampling))


def test_stop_strings_are_found_in_the_generated_text_only_and_rows_end_there(gen, prompts):
    greedy = run(gen, prompts, SamplingParams(temperature=0, max_tokens=20))
    assert greedy[0].finish_reason == "length" and len(greedy[0].ids) == 20
    # the others end on the end-of-turn token; what the batch ran on after it is not theirs
    assert [(c.finish_reason, c.ids[-1]) for c in greedy[1:]] == [("stop", gen.eos_id)] * 2
    assert all(gen.tokenizer.pad_token_id not in c.ids for c in greedy)
    tok = gen.tokenizer
    # "\n" + the first generated character: it shows up only across the prompt boundary
    first = tok.decode(greedy[0].ids[:1])
    across = SamplingParams(temperature=0, max_tokens=20, stop=["\n" + first])
    assert "\n" + first not in greedy[0].text
    [alone] = run(gen, prompts[:1], across)
    assert alone.ids == greedy[0].ids and alone.finish_reason == "length"
    # a stop string in the middle of row 0's text, with longer rows in the same batch
    stop = tok.decode(greedy[0].ids[5:7])
    cut = run(gen, prompts, SamplingParams(temperature=0, max_tokens=20, stop=[stop]))
    row = cut[0]
    n = next(k for k in range(1, 21) if stop in tok.decode(greedy[0].ids[:k]))
    assert row.ids == greedy[0].ids[:n] and row.finish_reason == "stop" and stop in row.text
    assert tok.pad_token_id not in row.ids and len(row.logprobs) == len(row.ids) == n
    assert row.logprobs == pytest.approx(greedy[0].logprobs[:n], abs=1e-5)
    for c, g in zip(cut[1:], greedy[1:], strict=True):  # the other rows run on as without a stop
        if stop not in g.text:
            assert c.ids == g.ids and c.finish_reason == g.finish_reason


def test_a_seed_gives_the_same_ids_whatever_else_is_in_the_batch(gen, prompts):
    import torch

    seeded = SamplingParams(temperature=1.0, max_tokens=12, seed=7)
    alone = run(gen, prompts[:1], seeded)[0].ids
    together = run(gen, [prompts[0], prompts[1], prompts[0]], seeded)
    assert together[0].ids == together[2].ids == alone
    # the process's random state is left alone by a seeded request ...
    state = torch.get_rng_state()
    run(gen, prompts[:1], seeded)
    assert torch.equal(torch.get_rng_state(), state)
    # ... and unseeded requests keep drawing fresh samples
    unseeded = SamplingParams(temperature=1.0, max_tokens=12)
    draws = {tuple(run(gen, prompts[:1], unseeded)[0].ids) for _ in range(3)}
    assert len(draws) == 3


def test_the_models_generation_config_adds_nothing(gen, prompts):
    greedy = SamplingParams(temperature=0, max_tokens=16)
    sampled = SamplingParams(temperature=1.0, max_tokens=16, seed=3)
    before = [run(gen, prompts, greedy), run(gen, prompts, sampled)]
    config = gen.model.generation_config
    saved = config.to_dict()
    try:
        config.repetition_penalty, config.top_k, config.no_repeat_ngram_size = 5.0, 2, 2
        config.min_new_tokens = 16  # would forbid the end-of-turn token
        after = [run(gen, prompts, greedy), run(gen, prompts, sampled)]
    finally:
        for key in ("repetition_penalty", "top_k", "no_repeat_ngram_size", "min_new_tokens"):
            setattr(config, key, saved.get(key))
    assert [[c.ids for c in r] for r in after] == [[c.ids for c in r] for r in before]


def test_seeded_rows_sample_the_models_distribution_in_one_batch(gen, prompts):
    """Seeded requests share a batch; each row is a draw from softmax(logits / T) (within top_p)
    under its own seed: the first token's frequencies over 3000 seeds match the model's
    probabilities, and no draw falls outside the top-p set."""
    import math

    import torch

    n = 3000
    prompt = prompts[1]
    for temperature, top_p in ((1.0, 1.0), (0.7, 0.6)):
        s = SamplingParams(temperature=temperature, max_tokens=1)
        outs = gen._run([prompt] * n, s, seeds=list(range(n)))
        first = [c.ids[0] for c in outs]
        logp = torch.tensor(outs[0].logprobs[:1])  # the model's own log-prob of row 0's token
        with torch.inference_mode():
            logits = gen.model(torch.tensor([prompt])).logits[0, -1].float()
        assert float(logits.log_softmax(-1)[first[0]]) == pytest.approx(float(logp[0]), abs=1e-4)
        probs = (logits / temperature).softmax(-1)
        if top_p < 1:
            s = SamplingParams(temperature=temperature, top_p=top_p, max_tokens=1)
            first = [c.ids[0] for c in gen._run([prompt] * n, s, seeds=list(range(n)))]
            ordered, order = probs.sort(descending=True)
            keep = order[(ordered.cumsum(0) - ordered) < top_p]
            assert set(first) <= set(keep.tolist())
            probs = torch.zeros_like(probs).index_fill(0, keep, 1.0) * probs
            probs = probs / probs.sum()
        for tok in probs.argsort(descending=True)[:5].tolist():
            p, freq = float(probs[tok]), first.count(tok) / n
            assert abs(freq - p) < 4.5 * math.sqrt(p * (1 - p) / n) + 1e-3, (tok, p, freq)
        # different seeds, different samples; the same seed, the same sample
        assert len(set(first)) > 3
    again = gen._run([prompt] * 4, SamplingParams(temperature=1.0, max_tokens=8), seeds=[5, 6, 5, 6])
    assert again[0].ids == again[2].ids and again[1].ids == again[3].ids
