//! Detection outputs → boxes: YOLO- and SSD-style layouts, score threshold,
//! per-class non-maximum suppression, boxes in source-image pixels.
//!
//! INTERFACE STUB: being written.
