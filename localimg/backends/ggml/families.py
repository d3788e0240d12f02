"""What each model family stable-diffusion.cpp loads can do, read from the version it reports.

stable-diffusion.cpp tells families apart by tensor names alone and logs `Version: <name>` while
loading (model.cpp `get_sd_version`, stable-diffusion.cpp `model_version_to_str`). Some families
share one network and so one name: FLUX.1-dev and FLUX.1 Kontext are both "Flux", Qwen-Image and
Qwen-Image-Edit are both "Qwen Image"; the YAML's `reference_edit:true` says which one a file is.
Chroma also reports "Flux" but logs its pruned modulation, and a Wan model logs its variant
("Wan2.1-T2V-1.3B", ...), which decides whether it reads an input image. Qwen-Image-2512 is
Qwen-Image's network ("Qwen Image"); Z-Image base and Turbo are both "Z-Image". Families the
bundled version cannot load (Krea 2, Ideogram 4, Qwen-Image-Layered and 2.x, Z-Image-Omni, LTX-2)
never get here: file_families.py refuses their files before loading.

The rules here mirror the C++ code of stable-diffusion-cpp-python 0.4.7:
- size: the library aligns width and height up to vae_scale_factor x the diffusion model's down
  factor (8 x 8 for UNets; 8 x 1 for most DiTs, which pad and crop; 16 for the FLUX.2 VAE of
  FLUX.2 and ERNIE-Image; Wan x 2). A side that is not a multiple would come back larger, so
  it is refused.
- cfg: every family runs a real classifier-free guidance pass when cfg_scale != 1, and only then
  reads the negative prompt. `guidance` is the distilled guidance input only models with a
  `guidance_in` embedding have (FLUX.1-dev / Kontext, FLUX.2-dev).
- video: Wan keeps (frames - 1) // 4 * 4 + 1 frames, so other counts are refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

UNET_FAMILIES = (
    "SD 1.x",
    "SD 2.x",
    "SDXS",
    "SDXL",
    "SVD",
    "Instruct-Pix2Pix",
)
# Wan variants whose generate_video reads the init image (stable-diffusion.cpp's
# generate_video_latents: the first frame, or VACE's reference); the text-to-video ones would
# silently ignore it.
WAN_IMAGE_INPUT = (
    "Wan2.1-I2V-14B",
    "Wan2.2-I2V-14B",
    "Wan2.1-I2V-1.3B",
    "Wan2.1-FLF2V-14B",
    "Wan2.2-TI2V-5B",
    "Wan2.1-VACE-1.3B",
    "Wan2.x-VACE-14B",
)
WAN_END_IMAGE = ("Wan2.1-FLF2V-14B",)  # first-last-frame: a second image is the last frame
WAN_VARIANT = re.compile(r"\b(Wan2\.[0-9x]-[A-Z0-9]+-[0-9.]+B)\b")
# FLUX.2 takes several reference images; BFL documents up to 10 for multi-reference editing and
# stable-diffusion.cpp sets no limit of its own (each image adds its tokens to attention).
FLUX2_REFERENCES = 10
QWEN_EDIT_REFERENCES = 3  # Qwen-Image-Edit-Plus (2509 / 2511): up to three pictures
KONTEXT_REFERENCES = 1


@dataclass(frozen=True)
class Family:
    """The facts of one loaded model that decide what a request may ask of it."""

    name: str  # stable-diffusion.cpp's version name, or a refinement of it (Chroma, the Wan)
    label: str  # how localimg names it in messages
    size_multiple: int
    side: int  # default width and height
    cfg_scale: float  # default cfg_scale
    references: int = 0  # reference images it takes (0: none)
    video: bool = False
    image_input_video: bool = False  # a video model that starts from an input image
    end_image: bool = False  # a video model that also takes a last frame
    guidance: bool = False  # a distilled guidance input (`guidance`)
    fps: float = 16.0  # video models: frames per second their training used
    width: int | None = None  # default size when not square
    height: int | None = None

    @property
    def unet(self) -> bool:
        return self.name.startswith(UNET_FAMILIES) or not self.name

    @property
    def wan(self) -> bool:
        return self.name.startswith("Wan")


def family_of(
    version: str, log: list[str], reference_edit: bool = False, guidance: bool | None = None
) -> Family:
    """The Family of a model from its `Version:` name and the library's load log lines."""
    text = "\n".join(log)
    if not version or version.startswith(UNET_FAMILIES):
        xl = version.startswith("SDXL")
        return Family(version, version or "model", 64, 1024 if xl else 512, 7.0)
    if version.startswith("Wan"):
        found = WAN_VARIANT.search(text)
        variant = found.group(1) if found else version
        ti2v = variant == "Wan2.2-TI2V-5B" or version == "Wan 2.2 TI2V"
        return Family(
            version,
            variant,
            32 if ti2v else 16,
            0,
            5.0,
            video=True,
            image_input_video=variant in WAN_IMAGE_INPUT or version == "Wan 2.2 I2V" or ti2v,
            end_image=variant in WAN_END_IMAGE,
            fps=24.0 if ti2v else 16.0,
            width=1280 if ti2v else 832,
            height=704 if ti2v else 480,
        )
    if version.startswith("Flux.2"):
        klein = "klein" in version
        return Family(
            version,
            "FLUX.2 klein" if klein else "FLUX.2",
            16,
            1024,
            1.0,
            references=FLUX2_REFERENCES,
            guidance=bool(guidance) and not klein,
        )
    if version == "Flux" and "(Chroma)" in text:
        return Family("Chroma", "Chroma", 8, 1024, 4.0)
    if version.startswith(("Flux", "Flex")):
        label = "FLUX.1 Kontext" if reference_edit else f"FLUX.1 ({version})"
        return Family(
            version,
            label,
            8,
            1024,
            1.0,
            references=KONTEXT_REFERENCES if reference_edit else 0,
            guidance=guidance is not False,
        )
    if version.startswith("Qwen Image"):
        label = "Qwen-Image-Edit" if reference_edit else "Qwen-Image"
        references = QWEN_EDIT_REFERENCES if reference_edit else 0
        return Family(version, label, 8, 1024, 2.5, references=references)
    if version.startswith("Z-Image"):
        # Turbo and the base model are one network; the default suits Turbo (distilled, no
        # guidance), the base model's YAML sets its cfg_scale (3 to 5).
        return Family(version, "Z-Image", 8, 1024, 1.0)
    if version.startswith("Ernie Image"):
        # The FLUX.2 VAE (16x); cfg 4 is the model card's (Turbo's YAML sets 1).
        return Family(version, "ERNIE-Image", 16, 1024, 4.0)
    if version.startswith("Anima"):
        return Family(version, "Anima", 8, 1024, 4.0)
    if version.startswith("Chroma Radiance"):
        return Family(version, version, 1, 1024, 4.0)
    # SD3.x, Ovis Image: DiTs on an 8x VAE.
    return Family(version, version, 8, 1024, 4.5)


def reference_edit_families() -> str:
    return "FLUX.1 Kontext ('Flux'), Qwen-Image-Edit ('Qwen Image')"


def may_mark_reference_edit(family: Family) -> bool:
    """Whether `reference_edit:true` names something real for this loaded family."""
    return family.name in ("Flux", "Qwen Image") or family.name.startswith("Flux.2")


def guidance_embed(log: list[str]) -> bool | None:
    """Whether a FLUX model has the distilled guidance input (its load log says so)."""
    for line in log:
        if "guidance_embed = " in line:
            return "guidance_embed = true" in line
    return None


def check_frames(frames: int, family: Family) -> None:
    """Wan keeps (frames - 1) // 4 * 4 + 1 frames: refuse any other count instead."""
    from localimg.errors import InvalidRequest

    if (frames - 1) % 4:
        low = (frames - 1) // 4 * 4 + 1
        raise InvalidRequest(
            f"num_frames {frames}: {family.label} makes 4k+1 frames (stable-diffusion.cpp would "
            f"make {low}); use {low} or {low + 4}",
            param="num_frames",
        )
