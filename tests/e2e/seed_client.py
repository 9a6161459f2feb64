# ruff: noqa
"""The raw-HTTP client of the seed tutorial (seeds/000, "Complete Code"), verbatim.

Only the Pyodide-only ``micropip`` lines are left out; tests change ``BASE_URL``.
"""
# fmt: off

# Complete code: OpenAI Batch API Pipeline
# Requires: pip install requests
# Python 3.9+

import json
import time
import requests
from datetime import datetime

API_KEY = "sk-your-api-key-here"
BASE_URL = "https://api.openai.com/v1"  # tests set this to the batchd under test
HEADERS = {"Authorization": f"Bearer {API_KEY}"}

# --- Step 1: Build JSONL ---
def create_batch_jsonl(prompts, model="gpt-4o-mini",
                       system_prompt="You are a helpful assistant.",
                       temperature=0.7, max_tokens=500):
    lines = []
    for i, prompt in enumerate(prompts):
        request = {
            "custom_id": f"req-{i+1:05d}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": model,
                "messages": [
                    {"role": "system", "content": system_prompt},
                    {"role": "user", "content": prompt}
                ],
                "temperature": temperature,
                "max_tokens": max_tokens
            }
        }
        lines.append(json.dumps(request))
    return "\n".join(lines)

# --- Step 2: Upload file ---
def upload_file(jsonl_content):
    resp = requests.post(f"{BASE_URL}/files",
        headers=HEADERS,
        files={"file": ("batch.jsonl", jsonl_content, "application/jsonl")},
        data={"purpose": "batch"})
    resp.raise_for_status()
    return resp.json()["id"]

# --- Step 3: Create batch ---
def create_batch(file_id, endpoint="/v1/chat/completions", desc=""):
    resp = requests.post(f"{BASE_URL}/batches",
        headers={**HEADERS, "Content-Type": "application/json"},
        json={"input_file_id": file_id, "endpoint": endpoint,
              "completion_window": "24h",
              "metadata": {"description": desc}})
    resp.raise_for_status()
    return resp.json()["id"]

# --- Step 4: Poll status ---
def wait_for_batch(batch_id, interval=10, max_wait=86400):
    elapsed = 0
    while elapsed < max_wait:
        resp = requests.get(f"{BASE_URL}/batches/{batch_id}",
                           headers=HEADERS)
        batch = resp.json()
        status = batch["status"]
        counts = batch["request_counts"]
        print(f"[{status}] {counts['completed']}/{counts['total']}")
        if status in ("completed", "failed", "expired", "cancelled"):
            return batch
        time.sleep(interval)
        elapsed += interval
        interval = min(interval * 2, 120)
    return None

# --- Step 5: Download results ---
def download_results(batch):
    file_id = batch["output_file_id"]
    resp = requests.get(f"{BASE_URL}/files/{file_id}/content",
                       headers=HEADERS)
    results = {}
    for line in resp.text.strip().split("\n"):
        item = json.loads(line)
        cid = item["custom_id"]
        body = item["response"]["body"]
        results[cid] = {
            "content": body["choices"][0]["message"]["content"],
            "tokens": body["usage"]["total_tokens"]
        }
    return results

# --- Run the pipeline ---
if __name__ == "__main__":
    prompts = ["Your prompts here..."]
    jsonl = create_batch_jsonl(prompts)
    file_id = upload_file(jsonl)
    batch_id = create_batch(file_id, desc="My batch job")
    batch = wait_for_batch(batch_id)
    if batch and batch["status"] == "completed":
        results = download_results(batch)
        print(f"Got {len(results)} results!")

print("Script completed successfully.")
