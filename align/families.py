"""Family-specific glue needed to load real VLM families offline (imported by align.modeling).

Some processors (Qwen2-VL, Qwen2.5-VL, SmolVLM) insist on a video processor, which needs torchvision;
image-only subclasses registered with AutoProcessor are added here as families are supported.
"""
