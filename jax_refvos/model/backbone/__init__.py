"""Vision-language backbones: decoder LMs (Qwen2, LLaMA) with LoRA and KV cache, the UMT video
tower with the ToMe16 projector (VideoChat-Flash / VIRST), CLIP ViT-L/14 with GLUS's projector,
and multimodal splicing."""
