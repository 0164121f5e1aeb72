#!/usr/bin/env python3
"""Writes a tiny diffusers pipeline folder (unet/, scheduler/, text_encoder/, tokenizer/) and a tiny TAESD folder,
with seeded random weights, laid out exactly like `stabilityai/sd-turbo` and `madebyollin/taesd` on disk.

It lets `export.py --from-pretrained` (the path real weights take) be run end to end where the real weights
cannot be downloaded:

    python make_tiny_pipeline.py /tmp/tiny-pipe
    python export.py /tmp/bundle --from-pretrained /tmp/tiny-pipe/sd --vae /tmp/tiny-pipe/taesd --size 64
"""

from __future__ import annotations

import argparse
import json
import string
import sys
from pathlib import Path


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lcm", action="store_true", help="give the UNet an LCM guidance embedding input")
    args = ap.parse_args(argv)

    import torch
    from diffusers import AutoencoderTiny, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(args.seed)
    sd = args.out / "sd"
    UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8,
        time_cond_proj_dim=32 if args.lcm else None,
    ).save_pretrained(sd / "unet")
    EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                           timestep_spacing="trailing").save_pretrained(sd / "scheduler")
    CLIPTextModel(CLIPTextConfig(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2,
                                 vocab_size=100, max_position_embeddings=77, bos_token_id=0,
                                 eos_token_id=1, pad_token_id=1)).save_pretrained(sd / "text_encoder")
    # A character-level BPE vocabulary: enough for CLIPTokenizer to load and tokenise any lowercase prompt.
    tok_dir = args.out / "tok-src"
    tok_dir.mkdir(parents=True, exist_ok=True)
    chars = list(string.ascii_lowercase) + [",", "."]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    (tok_dir / "vocab.json").write_text(json.dumps(vocab))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=77).save_pretrained(sd / "tokenizer")
    AutoencoderTiny(encoder_block_out_channels=(16, 16, 16, 16), decoder_block_out_channels=(16, 16, 16, 16),
                    num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1),
                    latent_channels=4).save_pretrained(args.out / "taesd")
    print(f"wrote {sd} and {args.out / 'taesd'}")


if __name__ == "__main__":
    sys.exit(main())
