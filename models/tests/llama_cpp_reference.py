"""llama.cpp's view of a GGUF model, for Kiln's comparison test (models/tests/local_llama_cpp.rs).

Reads {"model": PATH, "prompts": [TEXT…], "steps": N} on stdin; for each prompt prints (as one
JSON document on stdout) llama.cpp's token ids, then for each of N greedy steps the chosen token,
the 20 highest logits (id, value) and the margin between the two highest. Runs with the
llama-cpp-python that `ops/setup llama-cpp` builds; `--write FILE` also stores the result (the
fixture used when that venv is absent).
"""

import json
import sys

import llama_cpp
import numpy as np


def main():
    request = json.load(sys.stdin)
    llm = llama_cpp.Llama(
        model_path=request["model"], n_ctx=2048, n_threads=2, logits_all=False, verbose=False
    )
    results = []
    for prompt in request["prompts"]:
        tokens = llm.tokenize(prompt.encode(), add_bos=False, special=True)
        llm.reset()
        llm.eval(tokens)
        steps = []
        for _ in range(request["steps"]):
            row = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
            logits = np.ctypeslib.as_array(row, shape=(llm.n_vocab(),)).astype(np.float64)
            order = np.argsort(-logits, kind="stable")
            top = [[int(i), float(logits[i])] for i in order[:20]]
            chosen = int(order[0])
            steps.append({"token": chosen, "top": top, "margin": top[0][1] - top[1][1]})
            llm.eval([chosen])
        results.append({"prompt": prompt, "tokens": tokens, "steps": steps})
    document = {"llama_cpp_version": llama_cpp.__version__, "results": results}
    text = json.dumps(document)
    if len(sys.argv) == 3 and sys.argv[1] == "--write":
        with open(sys.argv[2], "w") as out:
            out.write(json.dumps(document, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
