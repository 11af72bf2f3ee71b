"""llama.cpp's side of ops/bench/llm: the same measurements as Kiln's `llm_bench` example, with
llama-cpp-python on the same GGUF file, prompts, thread count and token count (greedy).

Prints one JSON object: prefill and generation tokens per second for single sequences, and the
aggregate generation rate of the prompts decoded together as one batch (one llama.cpp sequence
per prompt in a shared KV cache, one token per sequence per decode call).
"""

import argparse
import json
import time

import llama_cpp
import numpy as np


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--prompts", required=True)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, required=True)
    args = parser.parse_args()
    prompts = json.load(open(args.prompts))
    llm = llama_cpp.Llama(
        model_path=args.model,
        n_ctx=4096,
        n_batch=512,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        verbose=False,
    )
    encoded = [llm.tokenize(p.encode(), add_bos=False, special=True) for p in prompts]

    single(llm, encoded[0], 4)  # warm-up
    prefill_tokens = prefill_s = generated = generation_s = generation_cpu_s = 0
    first = None
    for tokens in encoded:
        p, (g, g_cpu), completion = single(llm, tokens, args.tokens)
        prefill_tokens += len(tokens)
        prefill_s += p
        generated += args.tokens
        generation_s += g
        generation_cpu_s += g_cpu
        first = first or completion
    batched_tokens, batched_s = batched(llm, encoded, args.tokens, args.threads)
    print(json.dumps({
        "threads": args.threads,
        "prefill_tok_s": prefill_tokens / prefill_s,
        "generation_tok_s": generated / generation_s,
        "generation_cpu_tok_s": generated / generation_cpu_s,
        "batched_tok_s": batched_tokens / batched_s,
        "batched_generated_tokens": batched_tokens,
        "first_completion": llm.detokenize(first).decode(errors="replace"),
    }))


def single(llm, tokens, count):
    """(prefill seconds, (generation seconds, generation CPU seconds of this thread), ids): greedy,
    not stopping at end of generation. With one thread llama.cpp computes on the calling thread, so
    its CPU time leaves out the time other processes had the core."""
    llm.reset()
    started = time.perf_counter()
    llm.eval(tokens)
    prefill = time.perf_counter() - started
    completion = []
    started = time.perf_counter()
    cpu_started = time.thread_time()
    for _ in range(count):
        token = llm.sample(temp=0.0)
        completion.append(token)
        if len(completion) < count:
            llm.eval([token])
    timing = (time.perf_counter() - started, time.thread_time() - cpu_started)
    return prefill, timing, completion


def batched(llm, prompts, count, threads):
    """Every prompt prefilled, then decoded together: one batch of len(prompts) tokens per step,
    greedy, stopping a sequence at its end-of-generation token (as Kiln's engine does). Runs in a
    context of its own with one sequence per prompt."""
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = 4096
    params.n_batch = 512
    params.n_seq_max = len(prompts)
    params.kv_unified = True
    params.n_threads = threads
    params.n_threads_batch = threads
    ctx = llama_cpp.llama_init_from_model(llm._model.model, params)
    vocab = llm.n_vocab()
    batch = llama_cpp.llama_batch_init(max(512, len(prompts)), 0, len(prompts))
    vocab_handle = llama_cpp.llama_model_get_vocab(llm._model.model)
    eog = lambda token: llama_cpp.llama_vocab_is_eog(vocab_handle, token)

    def decode(entries):
        """entries: (token, position, sequence, wants_logits); returns the batch index of each."""
        batch.n_tokens = len(entries)
        for i, (token, position, sequence, logits) in enumerate(entries):
            batch.token[i] = token
            batch.pos[i] = position
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = sequence
            batch.logits[i] = logits
        status = llama_cpp.llama_decode(ctx, batch)
        if status != 0:
            raise RuntimeError(f"llama_decode failed with status {status}")

    def argmax_np(index):
        logits = llama_cpp.llama_get_logits_ith(ctx, index)
        return int(np.argmax(np.ctypeslib.as_array(logits, shape=(vocab,))))

    started = time.perf_counter()
    last = []
    for sequence, tokens in enumerate(prompts):
        for start in range(0, len(tokens), 512):
            chunk = tokens[start:start + 512]
            decode([(t, start + i, sequence, start + i == len(tokens) - 1) for i, t in enumerate(chunk)])
        last.append(argmax_np(len(chunk) - 1))
    positions = [len(tokens) for tokens in prompts]
    generated = [1] * len(prompts)
    active = [not eog(token) for token in last]
    while any(active):
        entries = []
        for sequence, token in enumerate(last):
            if active[sequence] and generated[sequence] < count:
                entries.append((token, positions[sequence], sequence, True))
        if not entries:
            break
        decode(entries)
        for index, (_, _, sequence, _) in enumerate(entries):
            token = argmax_np(index)
            positions[sequence] += 1
            generated[sequence] += 1
            last[sequence] = token
            if eog(token) or generated[sequence] >= count:
                active[sequence] = False
    elapsed = time.perf_counter() - started
    llama_cpp.llama_batch_free(batch)
    llama_cpp.llama_free(ctx)
    return sum(generated), elapsed


if __name__ == "__main__":
    main()
