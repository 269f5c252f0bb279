"""The contracts two stages share, one module each; stages import them from here, never from another stage.

- `chat`: conversations through a chat template: the one tokenisation of teacher (soft-label sequences) and
  student (training / scoring sequences, assistant-only labels, `IGNORE_INDEX`).
- `hardlabels`: the hard-label dataset folder (schema, shards, metadata, load, push); `cards`: its README.md.
- `softlabels`: the soft-label columns stored beside the hard labels, on the same tokens: their formats and
  the one decoder.
- `run_record`: a student run folder's `distillab_run.json`, completion marker and model card.
- `sources`: where prompts and evaluation sets come from (table files, Hub datasets, reasoning-gym tasks).
- `tokenizers`: tokenizer identity (fingerprints); `stats`: the length statistics in cards and metadata.

Import the modules themselves (`from distillab.data.chat import tokenize_conversation`): this package
imports nothing, so that loading one contract does not load the heavy dependencies of the others.
"""
