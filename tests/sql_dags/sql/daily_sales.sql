INSERT INTO sales_daily SELECT * FROM sales WHERE day = '{{ ds }}'
