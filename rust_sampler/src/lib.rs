//! s4g's sampler. The algorithms live in plain-Rust modules (`geo`, `pack`, `topk`) that
//! return `Result<_, SamplerError>`; this file only holds the optional Python bindings:
//! argument conversion with fixed dtypes, GIL release around every computation, and one
//! place that maps `SamplerError` to Python: a bad argument to `ValueError`, an internal
//! fault to `RuntimeError`.
//!
//! Borrowed numpy buffers while the GIL is released: another Python thread could write to an
//! input array during the computation. `gps_neighbours` and `pack_batches` copy their inputs
//! first (O(N) against O(N log N · k) and O(N · batch) work), so they never read memory that
//! Python can change. `topk_merge` and `count_above` read their score block in place,
//! because a copy would be a second pass over the largest array of blocked scoring; their
//! contract is numpy's own for functions that release the GIL: the caller must not write to
//! the arrays it passes until the call returns (s4g's callers pass blocks that no other
//! thread holds).

pub mod count;
pub mod error;
pub mod geo;
pub mod pack;
pub mod topk;

pub use error::SamplerError;

#[cfg(feature = "python")]
mod python {
    use numpy::ndarray::Array2;
    use numpy::{
        IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods,
    };
    use pyo3::exceptions::{PyRuntimeError, PyValueError};
    use pyo3::prelude::*;

    use crate::error::SamplerError;
    use crate::{count, geo, pack, topk};

    /// A pair of 2-D result arrays handed to Python.
    type Pair2<'py, A, B> = (Bound<'py, PyArray2<A>>, Bound<'py, PyArray2<B>>);

    /// The one mapping from the library's error to Python.
    fn to_py(err: SamplerError) -> PyErr {
        match err {
            SamplerError::InvalidArgument(_) => PyValueError::new_err(err.to_string()),
            SamplerError::Internal(_) => PyRuntimeError::new_err(err.to_string()),
        }
    }

    fn as_slice<'a, T: numpy::Element, D: numpy::ndarray::Dimension>(
        arr: &'a numpy::PyReadonlyArray<'_, T, D>,
        name: &str,
    ) -> PyResult<&'a [T]> {
        arr.as_slice().map_err(|_| {
            to_py(SamplerError::InvalidArgument(format!(
                "{name} must be a C-contiguous array"
            )))
        })
    }

    /// A (rows, cols) score array as a `topk::Block` whose first column is `col_offset`.
    fn as_block<'a>(
        scores: &'a PyReadonlyArray2<'_, f32>,
        col_offset: i64,
    ) -> PyResult<topk::Block<'a>> {
        Ok(topk::Block {
            scores: as_slice(scores, "scores")?,
            rows: scores.shape()[0],
            cols: scores.shape()[1],
            col_offset,
        })
    }

    fn to_2d<T: numpy::Element>(
        py: Python<'_>,
        data: Vec<T>,
        rows: usize,
        cols: usize,
    ) -> PyResult<Bound<'_, PyArray2<T>>> {
        let arr = Array2::from_shape_vec((rows, cols), data)
            .map_err(|e| to_py(SamplerError::Internal(format!("result shape: {e}"))))?;
        Ok(arr.into_pyarray(py))
    }

    /// gps_neighbours(lat_deg, lon_deg, k) -> (idx (N,k) int64, dist_m (N,k) float64)
    #[pyfunction]
    fn gps_neighbours<'py>(
        py: Python<'py>,
        lat_deg: PyReadonlyArray1<'py, f64>,
        lon_deg: PyReadonlyArray1<'py, f64>,
        k: usize,
    ) -> PyResult<Pair2<'py, i64, f64>> {
        let (lat, lon) = (
            as_slice(&lat_deg, "lat_deg")?.to_vec(),
            as_slice(&lon_deg, "lon_deg")?.to_vec(),
        );
        let n = lat.len();
        let (idx, dist) = py
            .detach(|| geo::gps_neighbours(&lat, &lon, k))
            .map_err(to_py)?;
        Ok((to_2d(py, idx, n, k)?, to_2d(py, dist, n, k)?))
    }

    /// pack_batches(pair_class, neighbours, batch_size, neighbour_select, max_failed_pops, seed,
    ///   neighbour_range=None) -> (batches (n_batches, batch_size) int64, dropped, via_neighbour)
    #[pyfunction]
    #[pyo3(signature = (pair_class, neighbours, batch_size, neighbour_select, max_failed_pops, seed, neighbour_range=None))]
    #[allow(clippy::too_many_arguments)]
    fn pack_batches<'py>(
        py: Python<'py>,
        pair_class: PyReadonlyArray1<'py, i64>,
        neighbours: Option<PyReadonlyArray2<'py, i64>>,
        batch_size: usize,
        neighbour_select: usize,
        max_failed_pops: usize,
        seed: u64,
        neighbour_range: Option<usize>,
    ) -> PyResult<(Bound<'py, PyArray2<i64>>, usize, usize)> {
        let classes = as_slice(&pair_class, "pair_class")?.to_vec();
        let nb_owned = match &neighbours {
            Some(arr) => Some((
                as_slice(arr, "neighbours")?.to_vec(),
                arr.shape()[0],
                arr.shape()[1],
            )),
            None => None,
        };
        let nb = nb_owned
            .as_ref()
            .map(|(data, rows, width)| pack::Neighbours {
                data,
                rows: *rows,
                width: *width,
            });
        let packed = py
            .detach(|| {
                pack::pack_batches_in_range(
                    &classes,
                    nb,
                    batch_size,
                    neighbour_select,
                    neighbour_range.unwrap_or(usize::MAX),
                    max_failed_pops,
                    seed,
                )
            })
            .map_err(to_py)?;
        let batches = to_2d(py, packed.batches, packed.n_batches, batch_size)?;
        Ok((batches, packed.dropped, packed.via_neighbour))
    }

    /// topk_merge(scores (q, r) f32, col_offset, k, exclude (q,) i64, best_idx (q, k) i64,
    ///   best_val (q, k) f32) -> (new_idx (q, k) int64, new_val (q, k) float32)
    #[pyfunction]
    #[allow(clippy::too_many_arguments)]
    fn topk_merge<'py>(
        py: Python<'py>,
        scores: PyReadonlyArray2<'py, f32>,
        col_offset: i64,
        k: usize,
        exclude: PyReadonlyArray1<'py, i64>,
        best_idx: PyReadonlyArray2<'py, i64>,
        best_val: PyReadonlyArray2<'py, f32>,
    ) -> PyResult<Pair2<'py, i64, f32>> {
        let block = as_block(&scores, col_offset)?;
        let rows = block.rows;
        let exclude = as_slice(&exclude, "exclude")?;
        let (bi, bv) = (
            as_slice(&best_idx, "best_idx")?,
            as_slice(&best_val, "best_val")?,
        );
        let (idx, val) = py
            .detach(|| topk::topk_merge(block, k, exclude, bi, bv))
            .map_err(to_py)?;
        Ok((to_2d(py, idx, rows, k)?, to_2d(py, val, rows, k)?))
    }

    /// A block's counts and window scores: (above, best_val, best_col, window_row, window_val).
    type Counts<'py> = (
        Bound<'py, PyArray2<i64>>,
        Bound<'py, PyArray1<f32>>,
        Bound<'py, PyArray1<i64>>,
        Bound<'py, PyArray1<i64>>,
        Bound<'py, PyArray1<f32>>,
    );

    /// count_above(scores (q, r) f32, col_offset, lo (q, s) f32, hi (q, s) f32)
    ///   -> (above (q, s) int64, best_val (q,) float32, best_col (q,) int64,
    ///       window_row (n,) int64, window_val (n,) float32)
    #[pyfunction]
    fn count_above<'py>(
        py: Python<'py>,
        scores: PyReadonlyArray2<'py, f32>,
        col_offset: i64,
        lo: PyReadonlyArray2<'py, f32>,
        hi: PyReadonlyArray2<'py, f32>,
    ) -> PyResult<Counts<'py>> {
        let block = as_block(&scores, col_offset)?;
        let rows = block.rows;
        let windows = count::Windows {
            lo: as_slice(&lo, "lo")?,
            hi: as_slice(&hi, "hi")?,
            slots: lo.shape()[1],
        };
        let c = py
            .detach(|| count::count_above(block, windows))
            .map_err(to_py)?;
        Ok((
            to_2d(py, c.above, rows, windows.slots)?,
            c.best_val.into_pyarray(py),
            c.best_col.into_pyarray(py),
            c.window_row.into_pyarray(py),
            c.window_val.into_pyarray(py),
        ))
    }

    #[pymodule]
    fn _sampler(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add_function(wrap_pyfunction!(gps_neighbours, m)?)?;
        m.add_function(wrap_pyfunction!(pack_batches, m)?)?;
        m.add_function(wrap_pyfunction!(topk_merge, m)?)?;
        m.add_function(wrap_pyfunction!(count_above, m)?)?;
        m.add("MAX_FAILED_POPS", pack::MAX_FAILED_POPS)?;
        m.add("EARTH_RADIUS_M", geo::EARTH_RADIUS_M)?;
        m.add("GIT_COMMIT", env!("S4G_GIT_COMMIT"))?;
        Ok(())
    }
}
