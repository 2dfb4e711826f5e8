//! What every request reads: the configuration, the catalog and the upstream client.

use std::collections::HashMap;

use policy::DatasetId;

use crate::config::{Config, DatasetConfig};
use crate::source::upstream::Upstream;
use crate::source::SourceContext;

/// One catalog entry: the rules' view and the source configuration.
pub struct CatalogEntry {
    pub dataset: policy::Dataset,
    pub config: DatasetConfig,
}

/// The catalog, in declaration order, with lookup by id.
pub struct Catalog {
    entries: Vec<CatalogEntry>,
    by_id: HashMap<DatasetId, usize>,
}

impl Catalog {
    pub fn new(datasets: &[DatasetConfig]) -> Catalog {
        let entries: Vec<CatalogEntry> = datasets
            .iter()
            .map(|d| CatalogEntry {
                dataset: d.to_dataset(),
                config: d.clone(),
            })
            .collect();
        let by_id = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.dataset.id.clone(), i))
            .collect();
        Catalog { entries, by_id }
    }

    pub fn get(&self, id: &DatasetId) -> Option<&CatalogEntry> {
        self.by_id.get(id).map(|&i| &self.entries[i])
    }

    pub fn entries(&self) -> impl Iterator<Item = &CatalogEntry> {
        self.entries.iter()
    }
}

/// The gateway's shared state.
pub struct State {
    pub config: Config,
    pub catalog: Catalog,
    pub upstream: Upstream,
}

impl State {
    pub fn new(config: Config) -> State {
        State {
            catalog: Catalog::new(&config.datasets),
            upstream: Upstream::new(&config.upstream),
            config,
        }
    }

    pub fn source_context(&self) -> SourceContext<'_> {
        SourceContext {
            data_dir: &self.config.data_dir,
            upstream: &self.upstream,
            batch_rows: self.config.limits.batch_rows,
        }
    }
}
