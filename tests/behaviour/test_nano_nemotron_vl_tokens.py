"""Behaviour of patch 0003 (upstream #38727) on the installed vLLM wheel.

Nano-Nemotron-VL's processing info answers get_mm_max_tokens_per_item itself:
image -> exact token count of the dummy (largest) image, video / audio ->
seq_len, only for supported modalities with a non-zero count; an unsupported
modality with a non-zero count is a clear ValueError. The dummy inputs use
get_dummy_image_size_and_max_tokens().

Real vLLM classes throughout (processing info, dummy builder, multimodal
processor as registered on the model class, the encoder-budget helper that
the scheduler uses). The checkpoints need remote code from the hub, so the HF
config and tokenizer are small hand-written ones, and the model config is a
small stand-in exposing what the processing context reads.
"""

import pytest
import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from transformers import (
    ParakeetEncoderConfig,
    PretrainedConfig,
    PreTrainedTokenizerFast,
)

from vllm.config.multimodal import MultiModalConfig
from vllm.model_executor.models.nano_nemotron_vl import (
    NanoNemotronVLDummyInputsBuilder,
    NanoNemotronVLMultiModalProcessor,
    NanoNemotronVLProcessingInfo,
    NemotronH_Nano_VL_V2,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.encoder_budget import get_mm_max_toks_per_item
from vllm.multimodal.processing import InputProcessingContext
from vllm.transformers_utils.processors.nano_nemotron_vl import (
    AUDIO_CONTEXT,
    AUDIO_END,
    AUDIO_START,
    IMG_CONTEXT,
    IMG_END,
    IMG_START,
)

PATCH_SIZE = 16
IMAGE_SIZE = 64  # static tiling: 4 tokens per 64x64 tile


class StandInModelConfig:
    """What InputProcessingContext / the processing info read of ModelConfig."""

    def __init__(self, hf_config: PretrainedConfig, max_model_len: int) -> None:
        self.model = "tiny-nano-nemotron-vl"
        self.hf_config = hf_config
        self.max_model_len = max_model_len
        self.dtype = torch.float32
        self.multimodal_config = MultiModalConfig()

    def get_multimodal_config(self) -> MultiModalConfig:
        return self.multimodal_config


def make_tokenizer(*, with_video_token: bool) -> PreTrainedTokenizerFast:
    specials = [IMG_START, IMG_END, AUDIO_START, AUDIO_END, AUDIO_CONTEXT]
    if with_video_token:
        # Nano-Nemotron-VL's video token is IMG_CONTEXT; without it in the
        # vocabulary the processor reports supports_video == False.
        specials.append(IMG_CONTEXT)
    tok = Tokenizer(WordLevel({"<unk>": 0, "describe": 1}, unk_token="<unk>"))
    tok.pre_tokenizer = Whitespace()
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")
    hf_tok.add_tokens(specials, special_tokens=True)
    return hf_tok


def make_hf_config(
    *, dynamic: bool, max_num_patches: int = 0, audio: bool = False
) -> PretrainedConfig:
    extra = {}
    if audio:
        sound_config = ParakeetEncoderConfig()
        sound_config.sampling_rate = 16000
        extra["sound_config"] = sound_config
    args = {"min_num_patches": 4, "max_num_patches": max_num_patches}
    return PretrainedConfig(
        force_image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        downsample_ratio=0.5,
        use_thumbnail=True,
        norm_mean=[0.5, 0.5, 0.5],
        norm_std=[0.5, 0.5, 0.5],
        vision_config=PretrainedConfig(args=args if dynamic else {}),
        **extra,
    )


def make_processor(
    *,
    dynamic: bool = False,
    max_num_patches: int = 0,
    video: bool = True,
    audio: bool = False,
    max_model_len: int = 1024,
) -> NanoNemotronVLMultiModalProcessor:
    model_config = StandInModelConfig(
        make_hf_config(dynamic=dynamic, max_num_patches=max_num_patches, audio=audio),
        max_model_len,
    )
    ctx = InputProcessingContext(model_config, make_tokenizer(with_video_token=video))
    # The factories registered on the model class, as the registry uses them.
    processor = NemotronH_Nano_VL_V2._processor_factory.build_processor(ctx)
    assert isinstance(processor.info, NanoNemotronVLProcessingInfo)
    assert isinstance(processor.dummy_inputs, NanoNemotronVLDummyInputsBuilder)
    return processor


def dummy_path_tokens(processor, modality: str) -> int:
    """Token count of one dummy item, computed the slow 0.19.1 way: build the
    dummy inputs, run the real multimodal processor, count the embeddings."""
    mm_inputs = MULTIMODAL_REGISTRY.get_dummy_mm_inputs(
        processor.info.ctx.model_config, {modality: 1}, processor=processor
    )
    return sum(p.get_num_embeds() for p in mm_inputs["mm_placeholders"][modality])


TILERS = pytest.mark.parametrize(
    "tiler",
    [
        {"dynamic": False},
        {"dynamic": True},
        {"dynamic": True, "max_num_patches": 1000},
    ],
    ids=["static", "dynamic", "dynamic-max-patches"],
)


@TILERS
def test_image_bound_is_exact_dummy_image_token_count(tiler):
    processor = make_processor(**tiler)
    size, max_tokens = processor.info.get_dummy_image_size_and_max_tokens()

    # Same number the dummy-profiling path gets by really processing the image.
    assert max_tokens == dummy_path_tokens(processor, "image")
    assert processor.info.get_mm_max_tokens_per_item(1024, {"image": 1}) == {
        "image": max_tokens
    }


@TILERS
def test_dummy_data_uses_helper_size(tiler):
    processor = make_processor(**tiler)
    size, _ = processor.info.get_dummy_image_size_and_max_tokens()
    for num_images in (1, 3):
        mm_data = processor.dummy_inputs.get_dummy_mm_data(
            1024, {"image": num_images}, {}
        )
        assert len(mm_data["image"]) == num_images
        for image in mm_data["image"]:
            assert (image.width, image.height) == (size.width, size.height)


def test_max_num_patches_limits_image_bound():
    _, unlimited = make_processor(
        dynamic=True
    ).info.get_dummy_image_size_and_max_tokens()
    _, limited = make_processor(
        dynamic=True, max_num_patches=1000
    ).info.get_dummy_image_size_and_max_tokens()
    # pixel shuffle: 4 patches per token
    assert limited <= 1000 // 4 < unlimited


@pytest.mark.parametrize(
    ("video", "audio", "mm_counts", "expected"),
    [
        # image-only model
        (False, False, {"image": 1}, {"image"}),
        (False, False, {"image": 2, "video": 0, "audio": 0}, {"image"}),
        # video-capable model
        (True, False, {"image": 1, "video": 1}, {"image", "video"}),
        (True, False, {"image": 0, "video": 2}, {"video"}),
        (True, False, {"image": 1, "video": 0}, {"image"}),
        # audio-capable model
        (True, True, {"image": 1, "video": 1, "audio": 1}, {"image", "video", "audio"}),
        (True, True, {"audio": 3, "video": 0}, {"audio"}),
        (False, True, {"image": 1, "audio": 1}, {"image", "audio"}),
    ],
)
def test_tokens_per_item(video, audio, mm_counts, expected):
    processor = make_processor(video=video, audio=audio, max_model_len=4096)
    info = processor.info
    assert info.supports_video is video
    assert info.supports_audio is audio
    _, image_tokens = info.get_dummy_image_size_and_max_tokens()
    assert 0 < image_tokens < 4096

    for seq_len in (4096, 1234):
        got = info.get_mm_max_tokens_per_item(seq_len, mm_counts)
        want = {"image": image_tokens, "video": seq_len, "audio": seq_len}
        assert dict(got) == {m: want[m] for m in expected}

    # What the scheduler's encoder budget sees (seq_len = max_model_len),
    # answered without falling back to dummy profiling.
    got = get_mm_max_toks_per_item(
        info.ctx.model_config, MULTIMODAL_REGISTRY, processor, mm_counts
    )
    want = {"image": image_tokens, "video": 4096, "audio": 4096}
    assert dict(got) == {m: want[m] for m in expected}


@pytest.mark.parametrize(
    ("video", "audio", "mm_counts", "modality"),
    [
        (False, False, {"video": 1}, "video"),
        (False, False, {"audio": 1}, "audio"),
        (False, False, {"image": 1, "video": 2}, "video"),
        (True, False, {"image": 1, "audio": 1}, "audio"),
        (False, True, {"audio": 1, "video": 1}, "video"),
    ],
)
def test_unsupported_modality_is_an_error(video, audio, mm_counts, modality):
    info = make_processor(video=video, audio=audio).info
    with pytest.raises(ValueError, match=f"does not support {modality}") as exc:
        info.get_mm_max_tokens_per_item(1024, mm_counts)
    reason = "sound_config" if modality == "audio" else repr(IMG_CONTEXT)
    assert reason in str(exc.value)
