//! Masks applied to Arrow columns: the array form of [`policy::Mask`].

use std::sync::Arc;

use arrow::array::{new_null_array, Array, ArrayRef, AsArray, StringBuilder};
use arrow::compute::kernels::temporal::{date_part, DatePart};
use arrow::datatypes::DataType;
use policy::Mask;

use crate::error::Error;

/// Masks every value of `column`. Nulls stay null (there is nothing to hide in them).
pub fn apply(mask: Mask, column: &ArrayRef, hash_key: &[u8]) -> Result<ArrayRef, Error> {
    Ok(match mask {
        Mask::Null => new_null_array(column.data_type(), column.len()),
        Mask::YearOnly => {
            let years = date_part(column.as_ref(), DatePart::Year)?;
            arrow::compute::cast(&years, &DataType::Int64)?
        }
        text_mask => {
            let text = arrow::compute::cast(column, &DataType::Utf8)?;
            let text = text.as_string::<i32>();
            let mut masked = StringBuilder::with_capacity(text.len(), text.value_data().len());
            let mut buffer = String::new();
            for value in text.iter() {
                match value {
                    Some(v) => {
                        buffer.clear();
                        text_mask.write_text(v, hash_key, &mut buffer);
                        masked.append_value(&buffer);
                    }
                    None => masked.append_null(),
                }
            }
            Arc::new(masked.finish())
        }
    })
}
