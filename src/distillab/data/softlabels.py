"""The soft-label contract (DESIGN.md §3): extra columns on the hard-label rows, same tokens.

    input_ids         list<int32>          the teacher's tokens of the full chat-formatted sequence
    completion_start  int32                index in input_ids of the first completion token
    topk_ids          list<list<int32>>    [T - completion_start, k]
    topk_logprobs     list<list<float16>>  [T - completion_start, k], raw log-probs at temperature 1

Alignment: row j of topk_* is the teacher's distribution at position t = completion_start - 1 + j, i.e. over the
token input_ids[completion_start + j] (position t holds the distribution over token t+1). Only the completion
(the teacher's assistant turn and the chat template's tokens after it) is covered: prompts are never trained on.
The tail mass 1 - sum(exp(topk_logprobs)) is not stored; the KD loss decides how to treat it.
"""

from __future__ import annotations

import pyarrow as pa

SOFT_COLUMNS = ("input_ids", "completion_start", "topk_ids", "topk_logprobs")
ALIGNMENT = "topk_*[j] is the teacher distribution at position completion_start-1+j, over token input_ids[completion_start+j]"
TAIL = "not stored: the missing mass 1 - sum(exp(topk_logprobs)) is left to the KD loss (renormalize | tail_bucket)"
LOGPROB_DTYPES = {"float16": pa.float16(), "float32": pa.float32()}


def soft_label_fields(logprob_dtype: str) -> list[tuple[str, pa.DataType]]:
    return [
        ("input_ids", pa.list_(pa.int32())),
        ("completion_start", pa.int32()),
        ("topk_ids", pa.list_(pa.list_(pa.int32()))),
        ("topk_logprobs", pa.list_(pa.list_(LOGPROB_DTYPES[logprob_dtype]))),
    ]
