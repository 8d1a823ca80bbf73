"""Media in and out: image and video decoding, mask encodings, exports.

Used by the predictors (decoding, mask clean-up) and by the CLI and server (exports); it imports
neither. Everything here takes and returns NumPy arrays.
"""

from anyseg.io.export import (
    DAVIS_PALETTE,
    coco_rle_json,
    cutout,
    object_color,
    overlay,
    save_indexed_png,
    save_mask_png,
    save_rgb_png,
    save_rgba_png,
    to_jsonable,
    write_gif,
    write_json_atomic,
    write_video,
    yolo_polygons,
)
from anyseg.io.images import MAX_PIXELS, as_rgb_array, load_image, load_label_map
from anyseg.io.masks import (
    amg_clean_regions,
    connected_components,
    decode_rle,
    encode_rle,
    fill_holes,
    mask_to_box,
    mask_to_polygons,
    pack_bits,
    remove_small_regions,
    rle_area,
    rle_to_bbox,
    small_components,
    unpack_bits,
)
from anyseg.io.video import VideoSource, open_video

__all__ = [
    "DAVIS_PALETTE",
    "MAX_PIXELS",
    "VideoSource",
    "amg_clean_regions",
    "as_rgb_array",
    "coco_rle_json",
    "connected_components",
    "cutout",
    "decode_rle",
    "encode_rle",
    "fill_holes",
    "load_image",
    "load_label_map",
    "mask_to_box",
    "mask_to_polygons",
    "object_color",
    "open_video",
    "overlay",
    "pack_bits",
    "remove_small_regions",
    "rle_area",
    "rle_to_bbox",
    "save_indexed_png",
    "save_mask_png",
    "save_rgb_png",
    "save_rgba_png",
    "small_components",
    "to_jsonable",
    "unpack_bits",
    "write_gif",
    "write_json_atomic",
    "write_video",
    "yolo_polygons",
]
