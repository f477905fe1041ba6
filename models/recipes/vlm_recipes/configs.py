"""Model configurations the recipes build: the demo model and the real base sizes.

The base-size configs restate google/siglip-base-patch16-224 and
google/siglip2-base-patch16-224 (their published config.json values) because no model
hub is reachable here: random weights in the real architecture are what the export and
speed tests need.
"""

from __future__ import annotations

from transformers import SiglipConfig

DEMO_IMAGE_SIZE = 64
DEMO_MAX_LENGTH = 16


def demo_config(vocab_size: int) -> SiglipConfig:
    return SiglipConfig(
        text_config=dict(
            vocab_size=vocab_size,
            hidden_size=128,
            intermediate_size=512,
            num_hidden_layers=3,
            num_attention_heads=4,
            max_position_embeddings=DEMO_MAX_LENGTH,
            pad_token_id=0,
            eos_token_id=1,
            bos_token_id=1,
        ),
        vision_config=dict(
            hidden_size=128,
            intermediate_size=512,
            num_hidden_layers=4,
            num_attention_heads=4,
            image_size=DEMO_IMAGE_SIZE,
            patch_size=8,
        ),
    )


def siglip_base_patch16_224() -> SiglipConfig:
    return SiglipConfig(
        text_config=dict(
            vocab_size=32000,
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=64,
            layer_norm_eps=1e-6,
            hidden_act="gelu_pytorch_tanh",
        ),
        vision_config=dict(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            image_size=224,
            patch_size=16,
            layer_norm_eps=1e-6,
            hidden_act="gelu_pytorch_tanh",
        ),
    )


def siglip2_base_patch16_224() -> SiglipConfig:
    # The fixed-resolution SigLIP 2 checkpoints use the SigLIP architecture classes; what
    # changes is the Gemma tokenizer's vocabulary (256k) at the same widths and depths.
    cfg = siglip_base_patch16_224()
    cfg.text_config.vocab_size = 256000
    return cfg


BASE_CONFIGS = {
    "siglip-base-patch16-224": siglip_base_patch16_224,
    "siglip2-base-patch16-224": siglip2_base_patch16_224,
}
