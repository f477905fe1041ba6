"""The demo model's tokenizer: a small BPE trained with Hugging Face `tokenizers`.

SigLIP pools the text tower at the last position, so every input must be padded to the
fixed maximum length (`padding="max_length"`, as the original was trained) and end in
the end-of-sequence token when it fits. Both rules live inside tokenizer.json, so any
runtime that loads the file (Python or Rust `tokenizers`) pads the same way.
"""

from __future__ import annotations

import string

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"


def train_tokenizer(corpus: list[str], max_length: int, vocab_size: int = 384) -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.BPEDecoder()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, EOS, UNK],
        # Every letter and digit is in the vocabulary, so words the grammar never used
        # (a user's own labels) still tokenize, letter by letter, instead of to <unk>.
        initial_alphabet=list(string.ascii_lowercase + string.digits + string.punctuation),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    eos_id = tok.token_to_id(EOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, eos_id)]
    )
    tok.enable_truncation(max_length=max_length)
    tok.enable_padding(pad_id=tok.token_to_id(PAD), pad_token=PAD, length=max_length)
    return tok
