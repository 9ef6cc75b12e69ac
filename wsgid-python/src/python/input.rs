//! `wsgi.input` (the request body, from the frame or from Mongrel2's spooled upload file, never
//! read past CONTENT_LENGTH) and `wsgi.errors` (lines go to the log).

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Take};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

enum Source {
    /// The body carried in the request frame.
    Memory { body: Py<PyBytes>, pos: usize },
    /// Mongrel2's upload temp file, limited to the announced length.
    File(Take<BufReader<File>>),
}

/// `wsgi.input`: read(n), readline(n), readlines(hint) and iteration over lines.
#[pyclass(unsendable, module = "wsgid")]
pub struct Input {
    src: Source,
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Input").finish_non_exhaustive()
    }
}

impl Input {
    /// A stream over a body held in memory.
    pub fn memory(body: Py<PyBytes>) -> Self {
        Input {
            src: Source::Memory { body, pos: 0 },
        }
    }

    /// A stream over an upload file, at most `limit` bytes.
    pub fn file(file: File, limit: u64) -> Self {
        Input {
            src: Source::File(BufReader::with_capacity(64 * 1024, file).take(limit)),
        }
    }
}

fn size_arg(size: Option<isize>) -> Option<usize> {
    match size {
        Some(n) if n >= 0 => Some(n as usize),
        _ => None,
    }
}

fn io_err(e: std::io::Error) -> PyErr {
    pyo3::exceptions::PyOSError::new_err(format!("reading the upload file: {e}"))
}

impl Input {
    fn read_impl<'py>(
        &mut self,
        py: Python<'py>,
        size: Option<usize>,
    ) -> PyResult<Bound<'py, PyAny>> {
        match &mut self.src {
            Source::Memory { body, pos } => {
                let b = body.bind(py);
                let data = b.as_bytes();
                if *pos == 0 && size.is_none_or(|n| n >= data.len()) {
                    *pos = data.len();
                    return Ok(b.clone().into_any());
                }
                let start = (*pos).min(data.len());
                let end = match size {
                    Some(n) => start.saturating_add(n).min(data.len()),
                    None => data.len(),
                };
                *pos = end;
                Ok(PyBytes::new(py, &data[start..end]).into_any())
            }
            Source::File(f) => {
                let mut buf = Vec::new();
                match size {
                    Some(n) => {
                        buf.reserve(n.min(1 << 20));
                        (&mut *f)
                            .take(n as u64)
                            .read_to_end(&mut buf)
                            .map_err(io_err)?;
                    }
                    None => {
                        f.read_to_end(&mut buf).map_err(io_err)?;
                    }
                }
                Ok(PyBytes::new(py, &buf).into_any())
            }
        }
    }

    fn readline_impl<'py>(
        &mut self,
        py: Python<'py>,
        size: Option<usize>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        match &mut self.src {
            Source::Memory { body, pos } => {
                let data = body.bind(py).as_bytes();
                let start = (*pos).min(data.len());
                let limit = match size {
                    Some(n) => start.saturating_add(n).min(data.len()),
                    None => data.len(),
                };
                let end = memchr_nl(&data[start..limit]).map_or(limit, |i| start + i + 1);
                *pos = end;
                Ok(PyBytes::new(py, &data[start..end]))
            }
            Source::File(f) => {
                let mut buf = Vec::new();
                match size {
                    Some(n) => (&mut *f).take(n as u64).read_until(b'\n', &mut buf),
                    None => f.read_until(b'\n', &mut buf),
                }
                .map_err(io_err)?;
                Ok(PyBytes::new(py, &buf))
            }
        }
    }
}

fn memchr_nl(data: &[u8]) -> Option<usize> {
    data.iter().position(|&b| b == b'\n')
}

#[pymethods]
impl Input {
    /// Reads up to `size` bytes (all that is left when omitted or negative).
    #[pyo3(signature = (size=None))]
    fn read<'py>(&mut self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyAny>> {
        self.read_impl(py, size_arg(size))
    }

    /// Reads one line (at most `size` bytes).
    #[pyo3(signature = (size=None))]
    fn readline<'py>(
        &mut self,
        py: Python<'py>,
        size: Option<isize>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        self.readline_impl(py, size_arg(size))
    }

    /// Reads lines until EOF, or until about `hint` bytes were read.
    #[pyo3(signature = (hint=None))]
    fn readlines<'py>(
        &mut self,
        py: Python<'py>,
        hint: Option<isize>,
    ) -> PyResult<Bound<'py, PyList>> {
        let hint = size_arg(hint).filter(|&h| h > 0);
        let list = PyList::empty(py);
        let mut total = 0usize;
        loop {
            let line = self.readline_impl(py, None)?;
            let n = line.as_bytes().len();
            if n == 0 {
                break;
            }
            total += n;
            list.append(line)?;
            if hint.is_some_and(|h| total >= h) {
                break;
            }
        }
        Ok(list)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.readline_impl(py, None)?;
        Ok((!line.as_bytes().is_empty()).then_some(line))
    }

    fn readable(&self) -> bool {
        true
    }

    fn close(&self) {}
}

/// `wsgi.errors`: text written here goes to the worker's log, one record per line.
#[pyclass(module = "wsgid")]
#[derive(Debug, Default)]
pub struct ErrorStream {
    pending: std::sync::Mutex<String>,
}

#[pymethods]
impl ErrorStream {
    /// Writes text (str; bytes are decoded as UTF-8 with replacement).
    fn write(&self, data: &Bound<'_, PyAny>) -> PyResult<usize> {
        let text: String = if let Ok(s) = data.extract::<String>() {
            s
        } else if let Ok(b) = data.cast::<PyBytes>() {
            String::from_utf8_lossy(b.as_bytes()).into_owned()
        } else {
            return Err(PyValueError::new_err("wsgi.errors.write() takes a str"));
        };
        let n = text.chars().count();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.push_str(&text);
        while let Some(i) = pending.find('\n') {
            let line: String = pending.drain(..=i).collect();
            tracing::warn!(target: "wsgi.errors", "{}", line.trim_end_matches(['\n', '\r']));
        }
        Ok(n)
    }

    /// Writes each string of a sequence.
    fn writelines(&self, lines: &Bound<'_, PyAny>) -> PyResult<()> {
        for line in lines.try_iter()? {
            self.write(&line?)?;
        }
        Ok(())
    }

    /// Logs any unfinished line.
    fn flush(&self) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if !pending.is_empty() {
            tracing::warn!(target: "wsgi.errors", "{}", pending.as_str());
            pending.clear();
        }
    }
}
