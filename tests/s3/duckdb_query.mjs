// Run one SQL query (read from stdin) in an in-memory DuckDB and print its rows as JSON.
// test_s3_warehouse.py runs docs/warehouse.md's DuckDB example with it.
import { DuckDBInstance } from '@duckdb/node-api';

let sql = '';
for await (const chunk of process.stdin) sql += chunk;
const db = await DuckDBInstance.create(':memory:');
const conn = await db.connect();
const reader = await conn.runAndReadAll(sql);
process.stdout.write(JSON.stringify(reader.getRowObjectsJson()) + '\n');
