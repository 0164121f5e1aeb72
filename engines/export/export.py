#!/usr/bin/env python3
"""Export an engine bundle for oldfilmrestore's diffusion prior.

A bundle is a folder:

    manifest.toml              what the Rust side needs to know (see engines/README.md)
    vae_encoder.onnx           TAESD encoder   image [B,3,H,W] in [-1,1] -> latent [B,C,H/s,W/s]
    vae_decoder.onnx           TAESD decoder   latent -> image in [-1,1]
    unet.onnx                  UNet2DConditionModel   (sample, timestep, encoder_hidden_states) -> prediction
    prompt_embeds.safetensors  text embeddings, computed once here; the text encoder is not needed at run time
    trt-cache/                 filled by TensorRT on first use

Modes (exactly one):
    --from-pretrained DIR_OR_ID   real weights already on disk (a diffusers pipeline folder, or a Hugging Face id
                                  that is in the local cache: nothing is downloaded)
    --random-weights              full-size sd-turbo UNet and TAESD configs, random weights (benchmarks)
    --tiny                        the same model classes with tiny configs and seeded random weights (test fixtures)
    --identity                    hand-built graphs: encoder/decoder are exact inverses (space-to-depth and back), the
                                  UNet predicts zero, and alphas_cumprod[0] = 1, so strength 0 is the identity
    --image-model FILE.onnx       kind `image`: any RGB-to-RGB ONNX model, run through the same tiling and caching

Torch, diffusers and transformers are needed for all but --identity and --image-model (see requirements.txt).
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1
OPSET = 17


# ----------------------------------------------------------------------------------------------- manifest


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if not math.isfinite(f):
            raise ValueError(f"non-finite value {f} in manifest")
        r = repr(f)
        return r if ("." in r or "e" in r or "inf" in r) else r + ".0"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v)} to TOML")


def write_manifest(path: Path, top: dict, tables: dict) -> None:
    lines = ["# oldfilmrestore engine bundle (written by engines/export/export.py)"]
    for k, v in top.items():
        lines.append(f"{k} = {toml_value(v)}")
    for name, table in tables.items():
        lines.append("")
        lines.append(f"[{name}]")
        for k, v in table.items():
            lines.append(f"{k} = {toml_value(v)}")
    path.write_text("\n".join(lines) + "\n")


def diffusion_manifest(
    *,
    kind: str,
    name: str,
    source: str,
    dtype: str,
    size: tuple[int, int],
    latent_channels: int,
    vae_scale: int,
    batch: int,
    alphas_cumprod: np.ndarray,
    timesteps: list[int],
    prediction_type: str,
    boundary: str,
    prompt: str,
    embeds_shape: tuple[int, ...],
) -> tuple[dict, dict]:
    top = {"format": FORMAT_VERSION, "kind": kind, "name": name, "source": source, "dtype": dtype}
    tables = {
        "model": {
            "width": size[0],
            "height": size[1],
            "latent_channels": latent_channels,
            "vae_scale": vae_scale,
            "batch": batch,
        },
        "scheduler": {
            "num_train_timesteps": len(alphas_cumprod),
            "prediction_type": prediction_type,
            "boundary": boundary,
            "timestep_scaling": 10.0,
            "sigma_data": 0.5,
            "timesteps": [int(t) for t in timesteps],
            "alphas_cumprod": [float(a) for a in alphas_cumprod],
        },
        "files": {
            "vae_encoder": "vae_encoder.onnx",
            "vae_decoder": "vae_decoder.onnx",
            "unet": "unet.onnx",
            "prompt_embeds": "prompt_embeds.safetensors",
        },
        "tensors": {
            "encoder_input": "image",
            "encoder_output": "latent",
            "decoder_input": "latent",
            "decoder_output": "image",
            "unet_sample": "sample",
            "unet_timestep": "timestep",
            "unet_encoder_hidden_states": "encoder_hidden_states",
            "unet_output": "out_sample",
            "timestep_dtype": "float32",
            "prompt_embeds": "prompt_embeds",
        },
        "prompt": {"text": prompt, "shape": list(embeds_shape)},
    }
    return top, tables


def lcm_timesteps(num_train: int, original_steps: int = 50) -> list[int]:
    """The timesteps an LCM model was distilled on, descending (999, 979, ..., 19 for 1000/50)."""
    c = num_train // original_steps
    return [int(t) for t in (np.arange(1, original_steps + 1) * c - 1)[::-1]]


def write_embeds(path: Path, embeds: np.ndarray, dtype: str) -> None:
    from safetensors.numpy import save_file

    save_file({"prompt_embeds": np.ascontiguousarray(embeds.astype(np_dtype(dtype)))}, str(path))


def np_dtype(dtype: str):
    return {"float32": np.float32, "float16": np.float16}[dtype]


# ----------------------------------------------------------------------------------------------- torch export


def torch_modules():
    import torch
    from diffusers import AutoencoderTiny, UNet2DConditionModel

    return torch, AutoencoderTiny, UNet2DConditionModel


def export_torch(module, args: tuple, path: Path, input_names, output_names, batch: int) -> None:
    import onnx
    import torch

    dynamic_axes = None
    if batch == 0:
        dynamic_axes = {n: {0: "batch"} for n in list(input_names) + list(output_names)}
    tmp = path.parent / (path.stem + ".tmp")
    tmp.mkdir(exist_ok=True)
    tmp_file = tmp / path.name
    with torch.no_grad():
        torch.onnx.export(
            module,
            args,
            str(tmp_file),
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    # Models over 2 GB (the full-size fp32 UNet) come out with their weights in many side files: gather
    # them into one `<name>.data` beside the graph, which onnxruntime finds by itself.
    model = onnx.load(str(tmp_file), load_external_data=True)
    big = sum(t.ByteSize() for t in model.graph.initializer) > 1_800_000_000
    if big:
        onnx.save_model(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=path.name + ".data",
            size_threshold=1024,
        )
    else:
        onnx.save_model(model, str(path))
    shutil.rmtree(tmp)


def verify_with_ort(path: Path, feeds: dict, expected: np.ndarray, what: str, tol: float) -> float:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = sess.run(None, feeds)[0]
    err = float(np.max(np.abs(out.astype(np.float64) - expected.astype(np.float64))))
    print(f"  {what}: onnxruntime vs torch max |diff| = {err:.3g}")
    if err > tol:
        raise SystemExit(f"{what}: onnxruntime differs from torch by {err} (> {tol}); the export is wrong")
    return err


def export_diffusion_bundle(
    out: Path,
    *,
    kind: str,
    name: str,
    source: str,
    unet,
    vae,
    embeds: np.ndarray,
    alphas_cumprod: np.ndarray,
    prediction_type: str,
    size: int,
    batch: int,
    fp16: bool,
    prompt: str,
    guidance_embedding=None,
    tol: float = 1e-4,
) -> None:
    torch, _, _ = torch_modules()
    dtype = "float16" if fp16 else "float32"
    tdtype = torch.float16 if fp16 else torch.float32
    out.mkdir(parents=True, exist_ok=True)
    (out / "trt-cache").mkdir(exist_ok=True)

    vae = vae.eval().to(tdtype)
    unet = unet.eval().to(tdtype)
    scale = 2 ** (len(vae.config.encoder_block_out_channels) - 1)
    lc = vae.config.latent_channels
    if unet.config.in_channels != lc:
        raise SystemExit(f"UNet takes {unet.config.in_channels} channels but the VAE makes {lc}")
    if size % scale:
        raise SystemExit(f"--size {size} must be a multiple of the VAE scale {scale}")
    b = batch if batch > 0 else 1
    h = size // scale

    class Encoder(torch.nn.Module):
        def __init__(self, vae):
            super().__init__()
            self.vae = vae

        def forward(self, image):
            return self.vae.encode(image).latents * self.vae.config.scaling_factor

    class Decoder(torch.nn.Module):
        def __init__(self, vae):
            super().__init__()
            self.vae = vae

        def forward(self, latent):
            return self.vae.decode(latent / self.vae.config.scaling_factor).sample

    class UNet(torch.nn.Module):
        """(sample, timestep, encoder_hidden_states) -> prediction. An LCM guidance embedding, when the model
        has one, is baked in as a constant so the runtime never needs it."""

        def __init__(self, unet, w_emb):
            super().__init__()
            self.unet = unet
            self.w_emb = w_emb

        def forward(self, sample, timestep, encoder_hidden_states):
            cond = None
            if self.w_emb is not None:
                cond = self.w_emb.to(sample.dtype).expand(sample.shape[0], -1)
            return self.unet(sample, timestep, encoder_hidden_states, timestep_cond=cond, return_dict=False)[0]

    gen = torch.Generator().manual_seed(1234)
    image = (torch.rand(b, 3, size, size, generator=gen) * 2 - 1).to(tdtype)
    latent = torch.randn(b, lc, h, h, generator=gen).to(tdtype)
    timestep = torch.full((b,), 499.0, dtype=torch.float32)
    ehs = torch.from_numpy(np.repeat(embeds.astype(np.float32), b, axis=0)).to(tdtype)

    enc, dec, un = Encoder(vae), Decoder(vae), UNet(unet, guidance_embedding)
    print(f"exporting {kind} bundle to {out} ({dtype}, {size}x{size}, latent {lc}x{h}x{h}, batch {batch or 'dynamic'})")
    export_torch(enc, (image,), out / "vae_encoder.onnx", ["image"], ["latent"], batch)
    export_torch(dec, (latent,), out / "vae_decoder.onnx", ["latent"], ["image"], batch)
    export_torch(un, (latent, timestep, ehs), out / "unet.onnx", ["sample", "timestep", "encoder_hidden_states"],
                 ["out_sample"], batch)
    with torch.no_grad():
        ref_enc = enc(image).float().numpy()
        ref_dec = dec(latent).float().numpy()
        ref_unet = un(latent, timestep, ehs).float().numpy()
    np_t = np_dtype(dtype)
    verify_with_ort(out / "vae_encoder.onnx", {"image": image.numpy().astype(np_t)}, ref_enc, "vae_encoder", tol)
    verify_with_ort(out / "vae_decoder.onnx", {"latent": latent.numpy().astype(np_t)}, ref_dec, "vae_decoder", tol)
    verify_with_ort(out / "unet.onnx", {"sample": latent.numpy().astype(np_t), "timestep": timestep.numpy(),
                                        "encoder_hidden_states": ehs.numpy().astype(np_t)}, ref_unet, "unet", tol)

    write_embeds(out / "prompt_embeds.safetensors", embeds, dtype)
    timesteps = lcm_timesteps(len(alphas_cumprod)) if kind == "lcm" else []
    top, tables = diffusion_manifest(
        kind=kind, name=name, source=source, dtype=dtype, size=(size, size), latent_channels=lc, vae_scale=scale,
        batch=batch, alphas_cumprod=alphas_cumprod, timesteps=timesteps, prediction_type=prediction_type,
        boundary="lcm" if kind == "lcm" else "none", prompt=prompt, embeds_shape=embeds.shape,
    )
    write_manifest(out / "manifest.toml", top, tables)
    print(f"wrote {out}/manifest.toml")


def guidance_scale_embedding(w: float, dim: int):
    """LCM's w-embedding (LatentConsistencyModelPipeline.get_guidance_scale_embedding), for one scale."""
    import torch

    w = torch.tensor([w * 1000.0], dtype=torch.float32)
    half = dim // 2
    emb = math.log(10000.0) / (half - 1)
    emb = torch.exp(torch.arange(half, dtype=torch.float32) * -emb)
    emb = w[:, None] * emb[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=1)
    if dim % 2 == 1:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb


def default_alphas_cumprod():
    from diffusers import DDPMScheduler

    s = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
    return s.alphas_cumprod.double().numpy()


# ----------------------------------------------------------------------------------------------- modes


def tiny_models(kind: str, seed: int):
    torch, AutoencoderTiny, UNet2DConditionModel = torch_modules()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=8,
        time_cond_proj_dim=32 if kind == "lcm" else None,
    )
    vae = AutoencoderTiny(
        encoder_block_out_channels=(16, 16, 16, 16),
        decoder_block_out_channels=(16, 16, 16, 16),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
        latent_channels=4,
    )
    # Random init leaves TAESD's outputs tiny; widen them so the tests see real signal.
    with torch.no_grad():
        for p in vae.parameters():
            p.mul_(1.5)
    rng = np.random.default_rng(seed)
    embeds = rng.standard_normal((1, 77, 32)).astype(np.float32)
    return unet, vae, embeds


def full_size_random_models(kind: str, seed: int):
    """sd-turbo's UNet config (SD 2.1 base) and TAESD's, with random weights."""
    torch, AutoencoderTiny, UNet2DConditionModel = torch_modules()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=1024,
        attention_head_dim=(5, 10, 20, 20),
        use_linear_projection=True,
        time_cond_proj_dim=256 if kind == "lcm" else None,
    )
    vae = AutoencoderTiny()  # TAESD's default config is madebyollin/taesd's
    rng = np.random.default_rng(seed)
    embeds = rng.standard_normal((1, 77, 1024)).astype(np.float32)
    return unet, vae, embeds


def pretrained_models(args):
    """Loads real weights from disk or the Hugging Face cache; never downloads."""
    torch, AutoencoderTiny, UNet2DConditionModel = torch_modules()
    from diffusers import DDPMScheduler
    from transformers import CLIPTextModel, CLIPTokenizer

    src = args.from_pretrained
    kw = {"local_files_only": True}
    try:
        if args.lcm_lora:
            from diffusers import StableDiffusionPipeline

            pipe = StableDiffusionPipeline.from_pretrained(src, safety_checker=None, **kw)
            pipe.load_lora_weights(args.lcm_lora)
            pipe.fuse_lora()
            unet = pipe.unet
        else:
            unet = UNet2DConditionModel.from_pretrained(src, subfolder="unet", **kw)
        tokenizer = CLIPTokenizer.from_pretrained(src, subfolder="tokenizer", **kw)
        text_encoder = CLIPTextModel.from_pretrained(src, subfolder="text_encoder", **kw)
        scheduler = DDPMScheduler.from_pretrained(src, subfolder="scheduler", **kw)
        vae = AutoencoderTiny.from_pretrained(args.vae, **kw)
    except OSError as e:
        raise SystemExit(
            f"could not load weights from {src!r} / {args.vae!r} without downloading: {e}\n"
            "Put the diffusers folders on disk (or in the Hugging Face cache) first, e.g. on a machine with "
            "internet: `huggingface-cli download stabilityai/sd-turbo` and `huggingface-cli download madebyollin/taesd`."
        )
    max_length = min(tokenizer.model_max_length, text_encoder.config.max_position_embeddings)
    ids = tokenizer(args.prompt, padding="max_length", max_length=max_length, truncation=True,
                    return_tensors="pt").input_ids
    with torch.no_grad():
        embeds = text_encoder(ids)[0].float().numpy()
    w_emb = None
    if unet.config.time_cond_proj_dim is not None:
        w_emb = guidance_scale_embedding(args.guidance_scale - 1.0, unet.config.time_cond_proj_dim)
    return unet, vae, embeds, scheduler.alphas_cumprod.double().numpy(), scheduler.config.prediction_type, w_emb


def export_identity(out: Path, size: int, scale: int, batch: int, kind: str) -> None:
    """Encoder = SpaceToDepth, decoder = DepthToSpace (exact inverses), UNet = 0 * sample, alphas_cumprod[0] = 1:
    at strength 0 every step is exact, so a frame must come out as it went in."""
    import onnx
    from onnx import TensorProto, helper

    out.mkdir(parents=True, exist_ok=True)
    (out / "trt-cache").mkdir(exist_ok=True)
    lc = 3 * scale * scale
    h = size // scale
    bdim = batch if batch > 0 else "batch"
    emb_len, emb_dim = 4, 8

    def save(graph, name):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="oldfilm-export")
        model.ir_version = 8
        onnx.checker.check_model(model)
        onnx.save_model(model, str(out / name))

    img_t = helper.make_tensor_value_info("image", TensorProto.FLOAT, [bdim, 3, size, size])
    lat_t = helper.make_tensor_value_info("latent", TensorProto.FLOAT, [bdim, lc, h, h])
    save(helper.make_graph([helper.make_node("SpaceToDepth", ["image"], ["latent"], blocksize=scale)],
                           "identity_encoder", [img_t], [lat_t]), "vae_encoder.onnx")
    save(helper.make_graph([helper.make_node("DepthToSpace", ["latent"], ["image"], blocksize=scale, mode="DCR")],
                           "identity_decoder", [lat_t], [img_t]), "vae_decoder.onnx")
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    save(helper.make_graph(
        [helper.make_node("Mul", ["sample", "zero"], ["out_sample"])],
        "identity_unet",
        [helper.make_tensor_value_info("sample", TensorProto.FLOAT, [bdim, lc, h, h]),
         helper.make_tensor_value_info("timestep", TensorProto.FLOAT, [bdim]),
         helper.make_tensor_value_info("encoder_hidden_states", TensorProto.FLOAT, [bdim, emb_len, emb_dim])],
        [helper.make_tensor_value_info("out_sample", TensorProto.FLOAT, [bdim, lc, h, h])],
        initializer=[zero]), "unet.onnx")
    # A real-looking schedule whose first value is exactly 1: strength 0 adds no noise.
    ac = default_alphas_cumprod_numpy()
    ac[0] = 1.0
    write_embeds(out / "prompt_embeds.safetensors", np.zeros((1, emb_len, emb_dim), np.float32), "float32")
    top, tables = diffusion_manifest(
        kind=kind, name="identity", source="identity (space-to-depth)", dtype="float32", size=(size, size),
        latent_channels=lc, vae_scale=scale, batch=batch, alphas_cumprod=ac, timesteps=[],
        prediction_type="epsilon", boundary="lcm", prompt="", embeds_shape=(1, emb_len, emb_dim),
    )
    write_manifest(out / "manifest.toml", top, tables)
    print(f"wrote identity bundle {out}")


def export_identity_image(out: Path, size: int, batch: int) -> None:
    """Kind `image` whose model is the identity (in [-1, 1], to exercise the range conversion), written as a plain
    ONNX file and bundled through --image-model's own path."""
    import tempfile

    import onnx
    from onnx import TensorProto, helper

    bdim = batch if batch > 0 else "batch"
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    graph = helper.make_graph(
        [helper.make_node("Mul", ["input", "one"], ["output"])], "identity_image",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [bdim, 3, size, size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [bdim, 3, size, size])], initializer=[one])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="oldfilm-export")
    model.ir_version = 8
    onnx.checker.check_model(model)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "identity_image.onnx"
        onnx.save_model(model, str(path))
        export_image_model(out, path, "minus_one_one", size, batch, name="identity-image", source="identity (x * 1)")


def default_alphas_cumprod_numpy() -> np.ndarray:
    """scaled_linear(0.00085, 0.012, 1000) as diffusers computes it (in float32), without needing diffusers."""
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float32) ** 2
    return np.cumprod((1.0 - betas).astype(np.float32), dtype=np.float32).astype(np.float64)


def export_image_model(out: Path, model_path: Path, value_range: str, size: int | None, batch: int | None,
                       name: str | None = None, source: str | None = None) -> None:
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1 or len(model.graph.output) != 1:
        raise SystemExit(f"{model_path}: an image model needs one input and one output, found {len(inputs)} and "
                         f"{len(model.graph.output)}")
    dims = [d.dim_value if d.HasField("dim_value") else 0 for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[1] not in (0, 3):
        raise SystemExit(f"{model_path}: input must be [B,3,H,W], found {dims}")
    width = dims[3] or size
    height = dims[2] or size
    if not width or not height:
        raise SystemExit(f"{model_path} has dynamic spatial size: give --size")
    elem = inputs[0].type.tensor_type.elem_type
    dtype = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16"}.get(elem)
    if dtype is None:
        raise SystemExit(f"{model_path}: input type {elem} is not float32 or float16")
    out.mkdir(parents=True, exist_ok=True)
    (out / "trt-cache").mkdir(exist_ok=True)
    shutil.copy(model_path, out / "model.onnx")
    data = model_path.with_name(model_path.name + ".data")
    if data.exists():
        shutil.copy(data, out / data.name)
    top = {"format": FORMAT_VERSION, "kind": "image", "name": name or model_path.stem,
           "source": source or str(model_path), "dtype": dtype}
    tables = {
        "model": {"width": width, "height": height, "batch": batch if batch is not None else dims[0]},
        "files": {"model": "model.onnx"},
        "tensors": {"image_input": inputs[0].name, "image_output": model.graph.output[0].name},
        "image": {"range": value_range},
    }
    write_manifest(out / "manifest.toml", top, tables)
    print(f"wrote image bundle {out}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="bundle folder to write")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--from-pretrained", metavar="DIR_OR_ID",
                      help="diffusers pipeline (e.g. stabilityai/sd-turbo) already on disk or in the HF cache")
    mode.add_argument("--random-weights", action="store_true", help="full-size configs, random weights")
    mode.add_argument("--tiny", action="store_true", help="tiny configs, seeded random weights (test fixtures)")
    mode.add_argument("--identity", action="store_true", help="exact-inverse identity fixture")
    mode.add_argument("--image-model", type=Path, metavar="FILE.onnx", help="kind image: an RGB-to-RGB ONNX model")
    p.add_argument("--kind", choices=["turbo", "lcm", "image"], default="turbo",
                   help="bundle kind (image: only with --identity, or implied by --image-model)")
    p.add_argument("--vae", default="madebyollin/taesd", help="TAESD (diffusers AutoencoderTiny) folder or id")
    p.add_argument("--lcm-lora", help="LCM-LoRA folder or id to fuse into --from-pretrained (an SD 1.5 pipeline)")
    p.add_argument("--guidance-scale", type=float, default=8.0, help="LCM w (baked in when the UNet takes one)")
    p.add_argument("--prompt", default="a sharp, detailed, clean film frame, fine film grain",
                   help="text the prior is conditioned on (embedded once, here)")
    p.add_argument("--size", type=int, help="model input size in pixels (default 512; tiny 64; identity 32)")
    p.add_argument("--batch", type=int, default=0,
                   help="static batch size (tiles x stream-batch steps; TensorRT likes static); 0 = dynamic")
    p.add_argument("--fp16", action="store_true", help="export float16 weights and I/O")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=int, default=4, help="--identity: space-to-depth block size")
    p.add_argument("--range", choices=["zero_one", "minus_one_one"], default="zero_one",
                   help="--image-model: the value range the model takes and gives")
    args = p.parse_args(argv)

    if args.identity:
        if args.kind == "image":
            export_identity_image(args.out, args.size or 32, args.batch)
        else:
            export_identity(args.out, args.size or 32, args.scale, args.batch, args.kind)
        return
    if args.kind == "image":
        raise SystemExit("--kind image goes with --identity; for a model of your own use --image-model")
    if args.image_model:
        export_image_model(args.out, args.image_model, args.range, args.size, args.batch if args.batch else None)
        return
    if args.tiny:
        unet, vae, embeds = tiny_models(args.kind, args.seed)
        w_emb = guidance_scale_embedding(args.guidance_scale - 1.0, 32) if args.kind == "lcm" else None
        export_diffusion_bundle(
            args.out, kind=args.kind, name=f"tiny-{args.kind}", source=f"tiny random (seed {args.seed})", unet=unet,
            vae=vae, embeds=embeds, alphas_cumprod=default_alphas_cumprod(), prediction_type="epsilon",
            size=args.size or 64, batch=args.batch, fp16=args.fp16, prompt="(random embeddings)",
            guidance_embedding=w_emb, tol=1e-5 if not args.fp16 else 1e-2)
        return
    if args.random_weights:
        unet, vae, embeds = full_size_random_models(args.kind, args.seed)
        w_emb = guidance_scale_embedding(args.guidance_scale - 1.0, 256) if args.kind == "lcm" else None
        export_diffusion_bundle(
            args.out, kind=args.kind, name=f"random-{args.kind}", source=f"full-size random (seed {args.seed})",
            unet=unet, vae=vae, embeds=embeds, alphas_cumprod=default_alphas_cumprod(), prediction_type="epsilon",
            size=args.size or 512, batch=args.batch, fp16=args.fp16, prompt="(random embeddings)",
            guidance_embedding=w_emb, tol=1e-2 if not args.fp16 else 1e-1)
        return
    unet, vae, embeds, ac, pred, w_emb = pretrained_models(args)
    export_diffusion_bundle(
        args.out, kind=args.kind, name=Path(args.from_pretrained).name, source=args.from_pretrained, unet=unet,
        vae=vae, embeds=embeds, alphas_cumprod=ac, prediction_type=pred, size=args.size or 512, batch=args.batch,
        fp16=args.fp16, prompt=args.prompt, guidance_embedding=w_emb, tol=1e-2 if not args.fp16 else 1e-1)


if __name__ == "__main__":
    sys.exit(main())
