-- A few rows of one analytics table. warehouse.catalog fills in the column list and the table name as
-- quoted identifiers read from the catalog (never an agent's string); the row count is bound as $1.
-- Naming the columns (not *) gives a new statement when a column is added, so no stale cached plan.
SELECT {columns} FROM {table} LIMIT $1
