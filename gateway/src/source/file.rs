//! Local file sources.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use bytes::BytesMut;
use policy::Format;

use super::decode::Decoder;
use super::{bounded_slices, conform, pulled, BatchStream, Batches, ByteStream, Pushdown, MAX_STEP_BYTES};
use crate::error::Error;

/// Bytes read from a file per read call.
const READ_CHUNK: usize = 256 << 10;

/// What `stat` tells of a file: enough for ETag, Last-Modified and the dataset version.
#[derive(Clone, Debug)]
pub struct FileInfo {
    pub len: u64,
    pub modified: SystemTime,
    /// Changes whenever the file's length or modification time does.
    pub version: String,
}

impl FileInfo {
    /// What `stat` tells of the file at `path`, without opening it.
    pub fn of_path(path: &Path) -> Result<FileInfo, Error> {
        let meta =
            std::fs::metadata(path).map_err(|e| Error::source(format!("the dataset's file cannot be opened: {e}")))?;
        FileInfo::of_metadata(&meta).map_err(|e| Error::source(format!("the dataset's file cannot be read: {e}")))
    }

    fn of(file: &File) -> std::io::Result<FileInfo> {
        FileInfo::of_metadata(&file.metadata()?)
    }

    fn of_metadata(meta: &std::fs::Metadata) -> std::io::Result<FileInfo> {
        let modified = meta.modified()?;
        let nanos = modified.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        Ok(FileInfo { len: meta.len(), modified, version: format!("{nanos:x}-{:x}", meta.len()) })
    }
}

fn open(path: &Path) -> Result<(File, FileInfo), Error> {
    let file = File::open(path).map_err(|e| Error::source(format!("the dataset's file cannot be opened: {e}")))?;
    let info = FileInfo::of(&file).map_err(|e| Error::source(format!("the dataset's file cannot be read: {e}")))?;
    Ok((file, info))
}

/// What to read of a file.
pub struct Reading {
    /// The catalog's schema of the whole dataset.
    pub declared: SchemaRef,
    /// Indices into `declared` of the columns to read, in the order wanted.
    pub projection: Vec<usize>,
    /// `declared` at `projection`: the schema of the batches yielded.
    pub schema: SchemaRef,
    /// Rows per batch at most.
    pub batch_rows: usize,
    /// What may be left unread.
    pub pushdown: Pushdown,
}

/// Opens a file for reading batches; the file is opened here so that a missing or unreadable
/// file is an error before any response is sent.
pub async fn open_batches(path: PathBuf, format: Format, read: Reading) -> Result<Batches, Error> {
    // Opening reads the file's footer (Parquet, Arrow), so it is blocking work too.
    tokio::task::spawn_blocking(move || {
        let (file, info) = open(&path)?;
        let stream = batch_reader(file, format, read)?;
        Ok(Batches { version: Some(info.version), stream })
    })
    .await
    .map_err(|e| Error::internal(format!("file task failed: {e}")))?
}

/// The batches of an open file, read as they are asked for, and no further than the rows
/// `read.pushdown` needs.
fn batch_reader(file: File, format: Format, read: Reading) -> Result<BatchStream, Error> {
    let Reading { declared, projection, schema, batch_rows, pushdown } = read;
    Ok(match format {
        Format::Csv | Format::Ndjson => {
            let mut decoder = None;
            let mut file = file;
            let mut buf = vec![0u8; READ_CHUNK];
            let mut left = pushdown.rows;
            pulled(move |out: &mut Vec<RecordBatch>| loop {
                if left == Some(0) {
                    return Ok(false);
                }
                let n = file
                    .read(&mut buf)
                    .map_err(|e| Error::source(format!("reading the dataset's file failed: {e}")))?;
                let read = &buf[..n];
                // Batches are bounded by bytes as well as rows: the rows of a batch are set from
                // the length of the first lines, so a batch of wide rows stays near
                // MAX_STEP_BYTES. (A decoder can only be flushed between records.)
                let decoder = match &mut decoder {
                    Some(decoder) => decoder,
                    None => {
                        let lines = read.iter().filter(|b| **b == b'\n').count().max(1);
                        let rows = (MAX_STEP_BYTES * lines / read.len().max(1)).clamp(1, batch_rows);
                        // A first batch of just the rows needed ends the reading early.
                        let rows = left.map_or(rows, |left| rows.min(left));
                        decoder.insert(Decoder::new(format, declared.clone(), projection.clone(), rows)?)
                    }
                };
                let mut emit = |batch: RecordBatch| {
                    let batch = match left.as_mut() {
                        Some(left) => {
                            let rows = batch.num_rows().min(*left);
                            *left -= rows;
                            batch.slice(0, rows)
                        }
                        None => batch,
                    };
                    out.push(batch);
                    left != Some(0)
                };
                if n == 0 {
                    decoder.finish(&mut emit)?;
                    return Ok(false);
                }
                if !decoder.feed(read, &mut emit)? {
                    return Ok(false);
                }
                if !out.is_empty() {
                    return Ok(true);
                }
            })
        }
        Format::Parquet => {
            super::parquet::batches(file, &Reading { declared, projection, schema, batch_rows, pushdown })?
        }
        Format::ArrowIpc => {
            let mut file = file;
            let mut magic = [0u8; 6];
            let is_file_format = file.read_exact(&mut magic).is_ok() && &magic == b"ARROW1";
            file.seek(SeekFrom::Start(0)).map_err(|e| Error::source(e.to_string()))?;
            let mut reader = std::io::BufReader::with_capacity(READ_CHUNK, file);
            if is_file_format {
                // Read the footer's schema first, then only the columns the query needs.
                let file_schema = arrow::ipc::reader::FileReader::try_new(&mut reader, None)?.schema();
                let projection: Vec<usize> =
                    schema.fields().iter().filter_map(|f| file_schema.index_of(f.name()).ok()).collect();
                reader.seek(SeekFrom::Start(0)).map_err(|e| Error::source(e.to_string()))?;
                // The file reader seeks to each batch by the footer's offsets, so reading stops
                // with the last batch the answer needs.
                batches_of(
                    arrow::ipc::reader::FileReaderBuilder::new().with_projection(projection).build(reader)?,
                    schema,
                    pushdown.rows,
                )
            } else {
                batches_of(arrow::ipc::reader::StreamReader::try_new(reader, None)?, schema, pushdown.rows)
            }
        }
    })
}

/// Batches from a reader that yields them one at a time, conformed to `schema` and cut to
/// bounded slices; no batch is read once `rows` rows are (when given).
pub(super) fn batches_of<R>(mut reader: R, schema: SchemaRef, rows: Option<usize>) -> BatchStream
where
    R: Iterator<Item = Result<RecordBatch, arrow::error::ArrowError>> + Send + 'static,
{
    let mut left = rows;
    pulled(move |out: &mut Vec<RecordBatch>| {
        if left == Some(0) {
            return Ok(false);
        }
        match reader.next() {
            Some(batch) => {
                // Cut to bounded slices before the rows needed are taken: a few rows sliced from
                // a large batch still report the whole batch's memory.
                let mut slices = Vec::new();
                bounded_slices(conform(&batch?, &schema)?, &mut slices);
                for slice in slices {
                    match left.as_mut() {
                        Some(0) => break,
                        Some(left) => {
                            let rows = slice.num_rows().min(*left);
                            *left -= rows;
                            out.push(slice.slice(0, rows));
                        }
                        None => out.push(slice),
                    }
                }
                Ok(left != Some(0))
            }
            None => Ok(false),
        }
    })
}

/// An open file ready to stream a byte range.
pub struct OpenFile {
    file: File,
    pub info: FileInfo,
}

/// The number of rows in a file, where its format records it without a scan (Parquet's footer);
/// `None` for other formats or a file that cannot be read.
pub async fn recorded_rows(path: PathBuf, format: Format) -> Option<u64> {
    if format != Format::Parquet {
        return None;
    }
    tokio::task::spawn_blocking(move || {
        let file = File::open(&path).ok()?;
        let metadata = parquet::file::metadata::ParquetMetaDataReader::new().parse_and_finish(&file).ok()?;
        u64::try_from(metadata.file_metadata().num_rows()).ok()
    })
    .await
    .ok()
    .flatten()
}

/// Opens a file for raw download.
pub async fn open_bytes(path: PathBuf) -> Result<OpenFile, Error> {
    let (file, info) = tokio::task::spawn_blocking(move || open(&path))
        .await
        .map_err(|e| Error::internal(format!("file task failed: {e}")))??;
    Ok(OpenFile { file, info })
}

impl OpenFile {
    /// Streams bytes `start..end` in chunks of `chunk` bytes. If the file ends early (it was
    /// truncated while being served) the stream ends with an error, so the client sees a
    /// broken transfer rather than a short file.
    pub fn stream(self, start: u64, end: u64, chunk: usize) -> ByteStream {
        let mut file = self.file;
        let mut position = None;
        let mut remaining = end - start;
        pulled(move |out: &mut Vec<bytes::Bytes>| {
            if position.is_none() {
                file.seek(SeekFrom::Start(start)).map_err(|e| Error::source(format!("seek failed: {e}")))?;
                position = Some(start);
            }
            if remaining == 0 {
                return Ok(false);
            }
            let want = remaining.min(chunk as u64) as usize;
            let mut buf = BytesMut::zeroed(want);
            let mut filled = 0;
            while filled < want {
                match file.read(&mut buf[filled..]) {
                    Ok(0) => {
                        return Err(Error::source(
                            "the file ended before its announced length; it was truncated while being read",
                        ))
                    }
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(Error::source(format!("reading the file failed: {e}"))),
                }
            }
            remaining -= want as u64;
            out.push(buf.freeze());
            Ok(remaining > 0)
        })
    }
}
