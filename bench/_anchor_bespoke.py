"""Drive `bespokelabs-curator` (the benchmark's anchor) against the local teacher server.

Runs inside its own virtualenv (``.bench-venv``, see bench_generate.py), because that
package pins dependencies that conflict with this project's. Reads a JSON job from
argv[1]: base_url, prompts (a JSONL file of {"id", "messages"}), concurrency, rpm, tpm,
max_tokens, cache_dir. Prints one JSON line: responses, failed, wall seconds.
"""

import json
import os
import sys
import time


def main() -> None:
    import faulthandler
    import signal
    faulthandler.register(signal.SIGUSR1, all_threads=True)   # stack dump on demand
    job = json.loads(sys.argv[1])
    os.environ["CURATOR_CACHE_DIR"] = job["cache_dir"]
    from bespokelabs import curator

    rows = [json.loads(line) for line in open(job["prompts"], encoding="utf-8")]

    class Teacher(curator.LLM):
        def prompt(self, row):
            return row["messages"]

        def parse(self, row, response):
            return {"id": row["id"], "completion": response}

    llm = Teacher(
        model_name=job.get("model", "gpt-4o-mini"),
        backend="openai",
        generation_params={"max_tokens": job["max_tokens"], "temperature": 0.7},
        backend_params={
            "base_url": job["base_url"],
            "api_key": "sk-bench-not-a-real-key",
            "max_requests_per_minute": job["rpm"],
            "max_tokens_per_minute": job["tpm"],
            "max_concurrent_requests": job["concurrency"],
            "max_retries": 10,
            "request_timeout": job.get("timeout", 30),
            "require_all_responses": False,
            "seconds_to_pause_on_rate_limit": 1,
        },
    )
    from datasets import Dataset
    t0 = time.monotonic()
    out = llm(Dataset.from_list(rows))
    wall = time.monotonic() - t0
    ds = out.dataset if hasattr(out, "dataset") else out
    ids = [r["id"] for r in ds]
    print(json.dumps({"responses": len(ids), "distinct": len(set(ids)),
                      "failed": len(rows) - len(set(ids)), "wall_s": wall}))


if __name__ == "__main__":
    main()
